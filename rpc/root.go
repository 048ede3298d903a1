package rpc

import (
	"io"

	"github.com/dmsync/dmsync/blockhash"
)

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

// SourceRoot chunks a whole volume and returns its root and chunk count:
// what a receiver holding an exact replica acknowledges with. The root is
// that of blockhash's Merkle tree over the chunk list (TreeOf), the one
// root of a volume for acks, status and verify.
// A chunker with state (CDCChunker) starts afresh, so the root reflects a
// full re-chunk, not the chunker's stored list.
func SourceRoot(c Chunker, r io.ReaderAt, size uint64) (ID, uint64, error) {
	chunks, err := SourceChunks(c, r, size)
	if err != nil {
		return ID{}, 0, err
	}
	return TreeOf(chunks).Root(), uint64(len(chunks)), nil
}

// TreeOf returns blockhash's Merkle tree over a chunk list that tiles its
// volume.
func TreeOf(chunks []Chunk) *blockhash.Tree {
	list := make([]blockhash.Chunk, len(chunks))
	for i, c := range chunks {
		list[i] = blockhash.Chunk{Offset: c.Offset, Length: uint64(c.Length), ID: c.ID}
	}
	return blockhash.NewTree(list)
}
