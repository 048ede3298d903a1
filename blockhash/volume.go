package blockhash

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// Volume is one volume's chunk list and Merkle tree, kept in memory and
// brought up to date by rehashing the ranges that changed. It is what a
// sender uses to cut changed regions into chunks: the chunk boundaries
// inside a region depend on the content before it, which only the index
// knows. Volume is safe for concurrent use.
type Volume struct {
	mu   sync.Mutex
	name string
	c    *Chunker
	size uint64
	list []Chunk
	tree *Tree
}

// NewVolume returns the volume name of size bytes whose stored chunk list
// is list (as Chunker.All or an index load returns it). It returns an error
// wrapping ErrSizeMismatch or ErrBadIndex if list does not tile the volume
// with c's parameters.
func NewVolume(name string, c *Chunker, size uint64, list []Chunk) (*Volume, error) {
	if err := c.checkIndex(name, size, list); err != nil {
		return nil, err
	}
	return &Volume{name: name, c: c, size: size, list: list, tree: NewTree(list)}, nil
}

// ScanVolume chunks the whole volume r of size bytes.
func ScanVolume(ctx context.Context, name string, c *Chunker, r io.ReaderAt, size uint64) (*Volume, error) {
	list, _, err := c.All(ctx, r, size)
	if err != nil {
		return nil, fmt.Errorf("scan volume %q: %w", name, err)
	}
	return &Volume{name: name, c: c, size: size, list: list, tree: NewTree(list)}, nil
}

// Size returns the volume's size in bytes.
func (v *Volume) Size() uint64 { return v.size }

// Chunks returns the current chunk list. It must not be modified; a later
// Rehash or Cut replaces it, it does not change the returned slice.
func (v *Volume) Chunks() []Chunk {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.list
}

// Tree returns the current Merkle tree (never modified in place).
func (v *Volume) Tree() *Tree {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.tree
}

// Rehash updates the chunk list and the tree after the ranges changed were
// written to r (the device, still size bytes) and returns the diff. On error
// nothing changes.
func (v *Volume) Rehash(ctx context.Context, r io.ReaderAt, changed []Range) (Diff, error) {
	_, _, d, err := v.rehash(ctx, r, changed, Range{})
	return d, err
}

// Cut rehashes [start, end) as changed and returns the chunks that cover
// it — they tile span, which contains [start, end) and extends to chunk
// boundaries — with their bytes exactly as they were hashed (read once,
// during the rehash). The volume's list and tree are updated.
func (v *Volume) Cut(ctx context.Context, r io.ReaderAt, start, end uint64) (span Range, chunks []Chunk, data []byte, d Diff, err error) {
	if start >= end || end > v.size {
		return Range{}, nil, nil, Diff{}, fmt.Errorf("%w: volume %q: cut [%d, %d) of a %d byte volume", ErrRangeOutside, v.name, start, end, v.size)
	}
	chunks, data, d, err = v.rehash(ctx, r, []Range{{start, end - start}}, Range{start, end - start})
	if err != nil {
		return Range{}, nil, nil, Diff{}, err
	}
	span = Range{chunks[0].Offset, chunks[len(chunks)-1].End() - chunks[0].Offset}
	return span, chunks, data, d, nil
}

// rehash updates the volume and collects the chunks overlapping keep (if
// not empty) and their bytes.
func (v *Volume) rehash(ctx context.Context, r io.ReaderAt, changed []Range, keep Range) ([]Chunk, []byte, Diff, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var (
		kept []Chunk
		data []byte
	)
	emit := func(c Chunk, b []byte) {
		if keep.Len > 0 && c.Offset < keep.End() && c.End() > keep.Off {
			kept = append(kept, c)
			data = append(data, b...)
		}
	}
	list, d, err := v.c.rehash(ctx, v.name, r, v.size, v.list, changed, emit)
	if err != nil {
		return nil, nil, Diff{}, err
	}
	v.list = list
	v.tree = v.tree.Update(list, d.Spans)
	return kept, data, d, nil
}
