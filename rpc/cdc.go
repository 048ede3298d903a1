package rpc

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/dmsync/dmsync/blockhash"
)

// CDCChunker adapts blockhash's content-defined chunker to Chunker. It
// holds the source volume's chunk list and re-chunks only around a changed
// range: from the stored cut at or before the range's start, past its end,
// until a new cut lands on a stored cut (the bytes after a common cut chunk
// the same way) or the end of the stored list. Unlike blockhash.Rehash it
// keeps the bytes it hashed, so the sender offers and sends exactly them.
//
// The list must hold valid cuts of the volume: the whole volume's chunk list
// (from blockhash's index), a prefix of it, or nothing (the first Cuts
// then chunk from offset 0). Cut calls must come in ascending order within
// a pass for the list to stay equal to a full re-chunk.
type CDCChunker struct {
	c    *blockhash.Chunker
	mu   sync.Mutex
	list []blockhash.Chunk
}

// NewCDCChunker returns a Chunker over c starting from list (not copied).
func NewCDCChunker(c *blockhash.Chunker, list []blockhash.Chunk) *CDCChunker {
	return &CDCChunker{c: c, list: list}
}

// List returns a copy of the current chunk list, e.g. to store it in the
// chunk index after a pass.
func (k *CDCChunker) List() []blockhash.Chunk {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.list)
}

// Fresh returns a chunker with the same parameters and no list: a full
// re-chunk (used by SourceRoot to verify from scratch).
func (k *CDCChunker) Fresh() Chunker { return NewCDCChunker(k.c, nil) }

// Params implements Chunker.
func (k *CDCChunker) Params() ChunkParams {
	p := k.c.Params()
	return ChunkParams{Algorithm: fmt.Sprintf("blockhash-cdc-v%d", p.Version), Min: p.Min, Avg: p.Avg, Max: p.Max}
}

// Cut implements Chunker.
func (k *CDCChunker) Cut(r io.ReaderAt, size, start, end uint64) (Range, []byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if start >= end || end > size {
		return Range{}, nil, fmt.Errorf("cdc: range [%d,%d) outside volume of %d bytes", start, end, size)
	}
	listEnd := uint64(0)
	if n := len(k.list); n > 0 {
		listEnd = k.list[n-1].End()
	}
	// First stored chunk to replace: the one containing start.
	first := sort.Search(len(k.list), func(i int) bool { return k.list[i].End() > start })
	pos := listEnd
	if first < len(k.list) {
		pos = k.list[first].Offset
	}
	if pos > start {
		return Range{}, nil, fmt.Errorf("cdc: stored chunk list does not reach offset %d (it starts at %d)", start, pos)
	}
	step := uint64(k.c.Params().Avg)
	var data []byte
	grow := func(upto uint64) error { // make data cover [pos, min(upto, size))
		have := pos + uint64(len(data))
		upto = min(upto, size)
		if have >= upto {
			return nil
		}
		n := len(data)
		data = slices.Grow(data, int(upto-have))[:n+int(upto-have)]
		m, err := r.ReadAt(data[n:], int64(have))
		if m < len(data)-n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("cdc: read [%d,%d) of a %d-byte volume: %w", have, upto, size, err)
		}
		return nil
	}
	// The range and an average chunk's slack at once, then more as a
	// boundary search needs it.
	if err := grow(end + step); err != nil {
		return Range{}, nil, err
	}
	rg := Range{Start: pos}
	var chunks []blockhash.Chunk
	p := pos
	resync := len(k.list) // index of the first stored chunk kept after the range
	for p < size {
		var n int
		for {
			rest := data[p-pos:]
			var ok bool
			n, ok = k.c.Boundary(rest, p+uint64(len(rest)) >= size)
			if ok {
				break
			}
			if pos+uint64(len(data)) >= size {
				return Range{}, nil, fmt.Errorf("cdc: no boundary at %d before the end of the volume", p)
			}
			if err := grow(pos + uint64(len(data)) + max(step, uint64(len(rest)))); err != nil {
				return Range{}, nil, err
			}
		}
		if n <= 0 {
			return Range{}, nil, fmt.Errorf("cdc: empty chunk at %d", p)
		}
		rest := data[p-pos:]
		b := rest[:n]
		chunks = append(chunks, blockhash.Chunk{Offset: p, Length: uint64(n), ID: Sum(b), Fp: xxhash.Sum64(b)})
		p += uint64(n)
		if p < end {
			continue
		}
		if p >= listEnd {
			break // past the stored list: it now ends at p
		}
		if i, found := sort.Find(len(k.list), func(i int) int { return cmpU64(p, k.list[i].Offset) }); found {
			resync = i
			break
		}
	}
	if p >= listEnd {
		resync = len(k.list)
	}
	k.list = slices.Concat(k.list[:first], chunks, k.list[resync:])
	rg.End = p
	rg.Chunks = make([]Chunk, len(chunks))
	for i, c := range chunks {
		rg.Chunks[i] = Chunk{Offset: c.Offset, Length: uint32(c.Length), ID: c.ID}
	}
	return rg, data[:p-pos], nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
