package rpc

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"

	"github.com/dmsync/dmsync/pebble"
)

// idFilter is a Bloom filter over the chunk ids a received volume's index
// holds, kept in memory, so that planning a batch looks for a local copy of
// a chunk (a seek in the by-id index) only when the replica may hold its
// id somewhere. Without it, a full sync of fixed 4 KiB chunks spends most of
// the receiver's time seeking ids that are nowhere, since a fresh replica,
// and ciphertext, hold no copies.
//
// The filter only ever errs towards "maybe": an id it was not told of is
// reported absent, which costs a byte transfer, never a wrong copy (a copy
// is still read back and verified against its id). Ids of chunks that were
// overwritten stay in it until it is rebuilt from the index, which happens
// when it has taken in more ids than it was sized for: larger as the index
// grows (a rebuild at least doubles what it may take in before the next).
type idFilter struct {
	mu   sync.Mutex
	bits []uint64 // nil: not built yet
	mask uint64   // len(bits)*64 - 1 (a power of two)
	// count is the ids put in since the last build (indexed then, or
	// added since); past rebuildAt the filter is built again, larger, or
	// to drop the ids of chunks that were overwritten.
	count, rebuildAt uint64
	// builds counts whole-index reads, for tests.
	builds int
}

const (
	// filterHashes is the number of bit positions per id. With
	// filterBitsPerID bits per id of capacity, false positives stay near
	// 0.3% at capacity and under 9% at twice that.
	filterHashes    = 8
	filterBitsPerID = 12
	// minFilterIDs and maxFilterIDs bound a filter's capacity: 96 KiB to
	// 96 MiB. Past the largest, false positives rise and cost seeks.
	minFilterIDs = 1 << 16
	maxFilterIDs = 1 << 26
	// expectFilterIDs bounds the capacity a first build gives a volume for
	// the chunks it may come to hold (its size over the average chunk
	// length): a larger one grows as chunks arrive.
	expectFilterIDs = 1 << 20
)

// positions calls fn with the filter's bit positions for id. The id is a
// BLAKE3 digest, so its words are independent and uniform: double hashing
// over two of them gives the positions.
func (f *idFilter) positions(id ID, fn func(bit uint64)) {
	h1 := binary.LittleEndian.Uint64(id[0:8])
	h2 := binary.LittleEndian.Uint64(id[8:16]) | 1
	for i := uint64(0); i < filterHashes; i++ {
		fn((h1 + i*h2) & f.mask)
	}
}

// ensure builds the filter from vol's index if it is not built yet or took
// in more ids than it was built for. expect is how many chunks the volume
// holds when full (its size over the average chunk length). The caller
// holds f.mu.
func (f *idFilter) ensure(st *pebble.ReplicaStore, vol string, expect uint64) error {
	if f.bits != nil && f.count <= f.rebuildAt {
		return nil
	}
	f.builds++
	f.bits = nil
	var n uint64
	if err := st.Chunks(vol, func(pebble.ReplicaChunk) error { n++; return nil }); err != nil {
		return fmt.Errorf("replica index of %q: count it for its id filter: %w", vol, err)
	}
	capacity := min(max(2*n, min(expect, expectFilterIDs), minFilterIDs), maxFilterIDs)
	words := uint64(1) << bits.Len64((capacity*filterBitsPerID-1)/64)
	f.bits = make([]uint64, words)
	f.mask = words*64 - 1
	f.count, f.rebuildAt = 0, max(capacity, 2*n)
	err := st.Chunks(vol, func(c pebble.ReplicaChunk) error {
		f.set(ID(c.ID))
		return nil
	})
	if err != nil {
		f.bits = nil
		return fmt.Errorf("replica index of %q: build its id filter: %w", vol, err)
	}
	return nil
}

func (f *idFilter) set(id ID) {
	f.positions(id, func(b uint64) { f.bits[b/64] |= 1 << (b % 64) })
	f.count++
}

// mayHold reports whether the index may hold a chunk with id. The caller
// holds f.mu, and has called ensure.
func (f *idFilter) mayHold(id ID) bool {
	hit := true
	f.positions(id, func(b uint64) {
		if f.bits[b/64]&(1<<(b%64)) == 0 {
			hit = false
		}
	})
	return hit
}

// add records ids the index now holds. It must be called after the
// store's change is durable (or the filter may claim an id the index
// lost, which only costs a seek). Before the first build there is nothing
// to add to: the build reads the index as it is then.
func (f *idFilter) add(chunks []pebble.ReplicaChunk) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bits == nil {
		return
	}
	for _, c := range chunks {
		f.set(ID(c.ID))
	}
}
