package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/dmsync/dmsync/blockhash"
)

// hashGroup is how many chunks CutChanged fingerprints before it hashes
// the changed ones among them: 64 chunks of 4 KiB or 16 of 16 KiB stay in
// a core's L2 cache between the two passes.
const hashGroup = 16

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
	var sb sumBatch
	for off := rg.Start; off < rg.End; off += cs {
		b := data[off-rg.Start : min(off+cs, rg.End)-rg.Start]
		c := Chunk{Offset: off, Length: uint32(len(b))}
		if !sb.add(int(off-rg.Start), len(b), len(rg.Chunks)) {
			c.ID = Sum(b)
		}
		rg.Chunks = append(rg.Chunks, c)
	}
	sb.sum(data, func(i int, id ID) { rg.Chunks[i].ID = id })
	return rg, data, nil
}

// CutChanged is Cut for a sender that remembers what its peer acknowledged:
// it reads the chunks covering [start, end), fingerprints each with XXH64
// (cheap), and BLAKE3-hashes only those for which changed(offset, fp)
// reports true. It returns the runs of consecutive changed chunks as
// ranges, each with its bytes and its chunks' fingerprints, and the bytes
// read. changed may be called from several goroutines at once.
//
// A range of a MiB or more is read, fingerprinted and hashed in stripes on
// every core. When little of it changed, the changed runs are copied out
// and the read buffer is kept for the next call, so a pass over a mostly
// unchanged volume allocates (and zeroes) next to nothing. Otherwise data
// points into the read buffer, and the caller calls release (if not nil)
// once it no longer reads data, to hand the buffer on.
func (f FixedChunker) CutChanged(r io.ReaderAt, size, start, end uint64, changed func(off, fp uint64) bool) (rgs []Range, data [][]byte, fps [][]uint64, read uint64, release func(), err error) {
	if f.Size == 0 {
		return nil, nil, nil, 0, nil, fmt.Errorf("fixed chunker: size 0")
	}
	if start >= end || end > size {
		return nil, nil, nil, 0, nil, fmt.Errorf("fixed chunker: range [%d,%d) outside volume of %d bytes", start, end, size)
	}
	cs := uint64(f.Size)
	lo, hi := start/cs*cs, min((end+cs-1)/cs*cs, size)
	bp := getReadBuf(int(hi - lo))
	buf := *bp
	n := int((hi - lo + cs - 1) / cs)
	type block struct {
		fp      uint64
		blocks  []uint64
		id      ID
		changed bool
	}
	blocks := make([]block, n)
	workers := min(runtime.GOMAXPROCS(0), max(1, int((hi-lo)/stripeMin)))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		first, last := w*n/workers, (w+1)*n/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, to := uint64(first)*cs, min(uint64(last)*cs, hi-lo)
			got, err := r.ReadAt(buf[from:to], int64(lo+from))
			if err != nil && err != io.EOF {
				errs[w] = fmt.Errorf("read [%d,%d): %w", lo+from, lo+to, err)
				return
			}
			clear(buf[from+uint64(got) : to]) // a reused buffer holds older bytes

			// Changed blocks are hashed several at a time, a group of
			// them right after fingerprinting, while they are in cache.
			var sb sumBatch
			setID := func(i int, id ID) { blocks[i].id = id }
			for i := first; i < last; i++ {
				off := uint64(i) * cs
				b := buf[off:min(off+cs, hi-lo)]
				bl := &blocks[i]
				bl.fp, bl.blocks = chunkFingerprint(lo+off, b)
				if bl.changed = changed(lo+off, bl.fp); bl.changed && !sb.add(int(off), len(b), i) {
					bl.id = Sum(b)
				}
				if (i-first+1)%hashGroup == 0 {
					sb.sum(buf, setID)
					sb = sumBatch{}
				}
			}
			sb.sum(buf, setID)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		putReadBuf(bp)
		return nil, nil, nil, 0, nil, err
	}
	open := false
	var changedBytes uint64
	for i := range blocks {
		bl := &blocks[i]
		if !bl.changed {
			open = false
			continue
		}
		off := lo + uint64(i)*cs
		length := min(off+cs, hi) - off
		if !open {
			rgs = append(rgs, Range{Start: off, End: off})
			fps = append(fps, nil)
			open = true
		}
		k := len(rgs) - 1
		rgs[k].Chunks = append(rgs[k].Chunks, Chunk{Offset: off, Length: uint32(length), ID: bl.id, Blocks: bl.blocks})
		rgs[k].End = off + length
		fps[k] = append(fps[k], bl.fp)
		changedBytes += length
	}
	data = make([][]byte, len(rgs))
	if changedBytes <= (hi-lo)/4 {
		// Copy the few changed bytes out and keep the buffer.
		out := make([]byte, changedBytes)
		for k := range rgs {
			data[k], out = out[:rgs[k].End-rgs[k].Start:rgs[k].End-rgs[k].Start], out[rgs[k].End-rgs[k].Start:]
			copy(data[k], buf[rgs[k].Start-lo:rgs[k].End-lo])
		}
		putReadBuf(bp)
	} else {
		for k := range rgs {
			// Full slices: an append to one never writes into the buffer.
			data[k] = buf[rgs[k].Start-lo : rgs[k].End-lo : rgs[k].End-lo]
		}
		var once sync.Once
		release = func() { once.Do(func() { putReadBuf(bp) }) }
	}
	return rgs, data, fps, hi - lo, release, nil
}

// chunkFingerprint returns a fixed chunk's fingerprint and, for a chunk of
// more than one 4 KiB block, its blocks' fingerprints
// (blockhash.BlockFingerprints), in one pass over the bytes: a one-block
// chunk's fingerprint is its XXH64, a larger one's the XXH64 of its
// blocks' fingerprints (little-endian).
func chunkFingerprint(off uint64, b []byte) (uint64, []uint64) {
	if len(b) <= blockhash.BlockSize {
		return xxhash.Sum64(b), nil
	}
	blocks := blockhash.BlockFingerprints(off, b)
	var buf [32 * 8]byte
	raw := buf[:0]
	if len(blocks) > len(buf)/8 {
		raw = make([]byte, 0, 8*len(blocks))
	}
	for _, fp := range blocks {
		raw = binary.LittleEndian.AppendUint64(raw, fp)
	}
	return xxhash.Sum64(raw), blocks
}

// stripeMin is the least a CutChanged stripe reads and hashes on its own
// goroutine.
const stripeMin = 1 << 20

// readBufs holds read buffers CutChanged let go of.
var readBufs sync.Pool

// getReadBuf returns a buffer of n bytes, reused when one is free.
func getReadBuf(n int) *[]byte {
	if bp, ok := readBufs.Get().(*[]byte); ok {
		if cap(*bp) >= n {
			*bp = (*bp)[:n]
			return bp
		}
	}
	b := make([]byte, n)
	return &b
}

func putReadBuf(bp *[]byte) { readBufs.Put(bp) }
