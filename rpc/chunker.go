package rpc

import (
	"fmt"
	"io"
)

// Chunker cuts changed byte ranges of a volume into chunks. It is the seam
// to package blockhash's content-defined chunker; FixedChunker stands in
// until then.
type Chunker interface {
	// Params names the chunker; peers must agree on them exactly.
	Params() ChunkParams
	// Cut reads from r (a volume of size bytes) the chunks covering
	// [start, end). The returned range tiles [Range.Start, Range.End), which
	// contains [start, end) and may extend to chunk boundaries; data holds
	// exactly the bytes of that range as they were hashed.
	Cut(r io.ReaderAt, size, start, end uint64) (rg Range, data []byte, err error)
}

// FixedChunker cuts a volume into chunks of Size bytes at multiples of
// Size (the last chunk of the volume may be shorter).
type FixedChunker struct{ Size uint32 }

// Params returns "fixed-v1" with Min = Avg = Max = Size.
func (f FixedChunker) Params() ChunkParams {
	return ChunkParams{Algorithm: "fixed-v1", Min: f.Size, Avg: f.Size, Max: f.Size}
}

// Cut implements Chunker.
func (f FixedChunker) Cut(r io.ReaderAt, size, start, end uint64) (Range, []byte, error) {
	if f.Size == 0 {
		return Range{}, nil, fmt.Errorf("fixed chunker: size 0")
	}
	if start >= end || end > size {
		return Range{}, nil, fmt.Errorf("fixed chunker: range [%d,%d) outside volume of %d bytes", start, end, size)
	}
	cs := uint64(f.Size)
	rg := Range{Start: start / cs * cs, End: min((end+cs-1)/cs*cs, size)}
	data := make([]byte, rg.End-rg.Start)
	if _, err := r.ReadAt(data, int64(rg.Start)); err != nil && !(err == io.EOF) {
		return Range{}, nil, fmt.Errorf("read [%d,%d): %w", rg.Start, rg.End, err)
	}
	for off := rg.Start; off < rg.End; off += cs {
		b := data[off-rg.Start : min(off+cs, rg.End)-rg.Start]
		rg.Chunks = append(rg.Chunks, Chunk{Offset: off, Length: uint32(len(b)), ID: Sum(b)})
	}
	return rg, data, nil
}
