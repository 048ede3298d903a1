package rpc

import (
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/pebble"
)

// indexTree is a received volume's Merkle tree over its chunk index, kept
// in memory and brought up to date from the byte ranges whose index
// changed since: the one root a receiver acks with, shows in status and
// answers verify with, without reading the whole index per call.
//
// The tree's chunk list tiles the volume: a byte range the index does not
// describe (not received yet, or dropped) is a hole, a chunk with the zero
// ID, so a replica with holes never has the root of a whole source. Every
// change of the index must be followed by changed; the tree is built on
// first use and from then on updated only around the changed ranges.
type indexTree struct {
	mu      sync.Mutex
	tree    *blockhash.Tree // nil: not built yet
	chunks  uint64          // indexed chunks (holes not counted)
	covered uint64          // bytes they cover
	dirty   []blockhash.Range
	// rebuilds and splices count the work done, for tests.
	rebuilds, splices int
}

// isHole reports whether a tree leaf stands for bytes the index lacks.
func isHole(id [32]byte) bool { return id == [32]byte{} }

// changed records that the index changed inside ranges. It must be called
// after the store's change is durable.
func (x *indexTree) changed(ranges []pebble.ByteRange) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.tree == nil {
		return // the first build reads the store as it is then
	}
	for _, r := range ranges {
		if r.End > r.Start {
			x.dirty = append(x.dirty, blockhash.Range{Off: r.Start, Len: r.End - r.Start})
		}
	}
}

// current returns the tree of vol's index as it is now (it must not be
// modified), the number of indexed chunks and the bytes they cover.
func (x *indexTree) current(st *pebble.ReplicaStore, vol string, size uint64, log *slog.Logger) (*blockhash.Tree, uint64, uint64, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.tree != nil && len(x.dirty) > 0 {
		if err := x.splice(st, vol, size); err != nil {
			// The index is not shaped as the changed ranges said: read it
			// all again rather than trust the tree.
			log.Warn("replica index tree: rebuilding it whole", "volume", vol, "reason", err)
			x.tree = nil
		}
	}
	if x.tree == nil {
		if err := x.build(st, vol, size, log); err != nil {
			return nil, 0, 0, err
		}
	}
	return x.tree, x.chunks, x.covered, nil
}

// build reads the whole index.
func (x *indexTree) build(st *pebble.ReplicaStore, vol string, size uint64, log *slog.Logger) error {
	x.rebuilds++
	x.dirty = nil
	x.chunks, x.covered = 0, 0
	var list []blockhash.Chunk
	var at uint64 // the list tiles [0, at)
	skipped := 0
	err := st.Chunks(vol, func(c pebble.ReplicaChunk) error {
		if c.Offset < at || c.Length == 0 || c.End() > size {
			skipped++ // overlapping or out of bounds: not described
			return nil
		}
		if c.Offset > at {
			list = append(list, blockhash.Chunk{Offset: at, Length: c.Offset - at})
		}
		list = append(list, blockhash.Chunk{Offset: c.Offset, Length: uint64(c.Length), ID: c.ID})
		x.chunks++
		x.covered += uint64(c.Length)
		at = c.End()
		return nil
	})
	if err != nil {
		return fmt.Errorf("replica index of %q: %w", vol, err)
	}
	if skipped > 0 {
		log.Warn("replica index holds overlapping or out-of-bounds chunks; they count as not received", "volume", vol, "chunks", skipped)
	}
	if at < size {
		list = append(list, blockhash.Chunk{Offset: at, Length: size - at})
	}
	x.tree = blockhash.NewTree(list)
	return nil
}

// splice re-reads the index inside the dirty ranges, widened to the
// tree's chunk boundaries, and splices it into the tree.
func (x *indexTree) splice(st *pebble.ReplicaStore, vol string, size uint64) error {
	x.splices++
	leaves := x.tree.Level(0)
	// containing returns the index of the leaf holding byte off.
	containing := func(off uint64) int {
		return sort.Search(len(leaves), func(i int) bool { return leaves[i].End() > off })
	}
	var windows []blockhash.Range
	for _, d := range MergeRanges(x.dirty, size) {
		// A hole next to the window joins it, so holes stay maximal (one
		// hole per run of missing bytes, as build makes them).
		fi, li := containing(d.Off), containing(d.End()-1)
		if fi > 0 && isHole(leaves[fi-1].Hash) {
			fi--
		}
		if li+1 < len(leaves) && isHole(leaves[li+1].Hash) {
			li++
		}
		w := blockhash.Range{Off: leaves[fi].Offset, Len: leaves[li].End() - leaves[fi].Offset}
		if n := len(windows); n > 0 && w.Off <= windows[n-1].End() {
			windows[n-1].Len = max(windows[n-1].End(), w.End()) - windows[n-1].Off
			continue
		}
		windows = append(windows, w)
	}
	x.dirty = nil
	if len(windows) == 0 {
		return nil
	}
	var fresh []blockhash.Chunk
	var chunks, covered uint64
	// One read of the index for all windows (ascending, disjoint): wi is
	// the window being filled, at how far it is tiled.
	wi, at := 0, windows[0].Off
	closeWindow := func() {
		if w := windows[wi]; at < w.End() {
			fresh = append(fresh, blockhash.Chunk{Offset: at, Length: w.End() - at})
		}
		if wi++; wi < len(windows) {
			at = windows[wi].Off
		}
	}
	br := make([]pebble.ByteRange, len(windows))
	for i, w := range windows {
		br[i] = pebble.ByteRange{Start: w.Off, End: w.End()}
	}
	err := st.ChunksInRanges(vol, br, func(c pebble.ReplicaChunk) error {
		for c.Offset >= windows[wi].End() {
			closeWindow()
		}
		w := windows[wi]
		if c.Offset < at || c.Length == 0 || c.End() > w.End() {
			return fmt.Errorf("chunk [%d, %d) crosses the changed window [%d, %d)", c.Offset, c.End(), w.Off, w.End())
		}
		if c.Offset > at {
			fresh = append(fresh, blockhash.Chunk{Offset: at, Length: c.Offset - at})
		}
		fresh = append(fresh, blockhash.Chunk{Offset: c.Offset, Length: uint64(c.Length), ID: c.ID})
		chunks++
		covered += uint64(c.Length)
		at = c.End()
		return nil
	})
	if err != nil {
		return err
	}
	for wi < len(windows) {
		closeWindow()
	}
	// What the windows held before.
	var oldChunks, oldCovered uint64
	for _, w := range windows {
		for i := containing(w.Off); i < len(leaves) && leaves[i].Offset < w.End(); i++ {
			if !isHole(leaves[i].Hash) {
				oldChunks++
				oldCovered += leaves[i].Length
			}
		}
	}
	t, err := x.tree.Splice(windows, fresh)
	if err != nil {
		return err
	}
	x.tree = t
	x.chunks = x.chunks - oldChunks + chunks
	x.covered = x.covered - oldCovered + covered
	return nil
}
