package rpc

import (
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
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

// CutChanged is Cut for a sender that remembers what its peer acknowledged:
// it reads the chunks covering [start, end), fingerprints each with XXH64
// (cheap), and BLAKE3-hashes only those for which changed(offset, fp)
// reports true. It returns the runs of consecutive changed chunks as
// ranges, each with its bytes and its chunks' fingerprints, and the bytes
// read.
func (f FixedChunker) CutChanged(r io.ReaderAt, size, start, end uint64, changed func(off, fp uint64) bool) (rgs []Range, data [][]byte, fps [][]uint64, read uint64, err error) {
	if f.Size == 0 {
		return nil, nil, nil, 0, fmt.Errorf("fixed chunker: size 0")
	}
	if start >= end || end > size {
		return nil, nil, nil, 0, fmt.Errorf("fixed chunker: range [%d,%d) outside volume of %d bytes", start, end, size)
	}
	cs := uint64(f.Size)
	lo, hi := start/cs*cs, min((end+cs-1)/cs*cs, size)
	buf := make([]byte, hi-lo)
	if _, err := r.ReadAt(buf, int64(lo)); err != nil && err != io.EOF {
		return nil, nil, nil, 0, fmt.Errorf("read [%d,%d): %w", lo, hi, err)
	}
	open := false
	for off := lo; off < hi; off += cs {
		b := buf[off-lo : min(off+cs, hi)-lo]
		fp := xxhash.Sum64(b)
		if !changed(off, fp) {
			open = false
			continue
		}
		if !open {
			rgs = append(rgs, Range{Start: off, End: off})
			data = append(data, b[:0:0])
			fps = append(fps, nil)
			open = true
		}
		k := len(rgs) - 1
		rgs[k].Chunks = append(rgs[k].Chunks, Chunk{Offset: off, Length: uint32(len(b)), ID: Sum(b)})
		rgs[k].End = off + uint64(len(b))
		fps[k] = append(fps[k], fp)
	}
	for k := range rgs {
		data[k] = buf[rgs[k].Start-lo : rgs[k].End-lo]
	}
	return rgs, data, fps, hi - lo, nil
}
