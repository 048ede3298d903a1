package rpc

import (
	"encoding/binary"
	"io"

	"lukechampine.com/blake3"
)

// RootHasher computes the root over a volume's chunk list that receivers
// acknowledge with: BLAKE3-256 over a domain string, the volume size, and
// (offset u64, length u32, id) of every chunk in ascending offset order, all
// big-endian. It stands in for blockhash's Merkle root; both sides compute
// it the same way, so equal roots mean equal chunk lists.
type RootHasher struct {
	h   *blake3.Hasher
	n   uint64
	buf [44]byte
}

// NewRootHasher starts a root for a volume of size bytes.
func NewRootHasher(size uint64) *RootHasher {
	r := &RootHasher{h: blake3.New(32, nil)}
	r.h.Write([]byte("dmsync chunk-list root v1\x00"))
	r.h.Write(binary.BigEndian.AppendUint64(nil, size))
	return r
}

// Add appends a chunk; chunks must come in ascending offset order.
func (r *RootHasher) Add(c Chunk) {
	binary.BigEndian.PutUint64(r.buf[:], c.Offset)
	binary.BigEndian.PutUint32(r.buf[8:], c.Length)
	copy(r.buf[12:], c.ID[:])
	r.h.Write(r.buf[:])
	r.n++
}

// Sum returns the root and the number of chunks added.
func (r *RootHasher) Sum() (ID, uint64) {
	var id ID
	r.h.Sum(id[:0])
	return id, r.n
}

// SourceChunks chunks a whole volume from scratch and returns its chunk list.
func SourceChunks(c Chunker, r io.ReaderAt, size uint64) ([]Chunk, error) {
	if f, ok := c.(interface{ Fresh() Chunker }); ok {
		c = f.Fresh()
	}
	var out []Chunk
	const step = 16 << 20
	for off := uint64(0); off < size; {
		rg, _, err := c.Cut(r, size, off, min(off+step, size))
		if err != nil {
			return nil, err
		}
		for _, ch := range rg.Chunks {
			if ch.Offset >= off {
				out = append(out, Chunk{Offset: ch.Offset, Length: ch.Length, ID: ch.ID})
			}
		}
		off = rg.End
	}
	return out, nil
}

// SourceRoot chunks a whole volume and returns its root: what a receiver
// holding an exact replica acknowledges with.
// A chunker with state (CDCChunker) starts afresh, so the root reflects a
// full re-chunk, not the chunker's stored list.
func SourceRoot(c Chunker, r io.ReaderAt, size uint64) (ID, uint64, error) {
	if f, ok := c.(interface{ Fresh() Chunker }); ok {
		c = f.Fresh()
	}
	h := NewRootHasher(size)
	const step = 16 << 20
	for off := uint64(0); off < size; {
		rg, _, err := c.Cut(r, size, off, min(off+step, size))
		if err != nil {
			return ID{}, 0, err
		}
		for _, ch := range rg.Chunks {
			if ch.Offset >= off {
				h.Add(ch)
			}
		}
		off = rg.End
	}
	root, n := h.Sum()
	return root, n, nil
}
