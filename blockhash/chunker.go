package blockhash

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
)

// Read sizes of the streaming chunker. Reads start at multiples of Align,
// have lengths that are multiples of Align and land in Align-aligned memory,
// so an O_DIRECT file descriptor can serve them.
const (
	// Align is the alignment of read offsets, lengths and buffers.
	Align = 4096
	// DefaultReadSize is the read size of a full scan, and the largest
	// read of a rehash.
	DefaultReadSize = 1 << 20
)

// ErrShortRead reports a volume that ended before the size the caller (or
// the index) gave for it.
var ErrShortRead = errors.New("volume shorter than expected")

// Chunker splits volumes into content-defined chunks. It is safe for
// concurrent use; every call allocates its own buffer.
type Chunker struct {
	params   Params
	cut      cutter
	readSize int
	workers  int
}

// Option configures a Chunker.
type Option func(*Chunker)

// WithReadSize sets the size of the reads of a full scan (rounded up to a
// multiple of Align). Chunk boundaries never depend on it.
func WithReadSize(n int) Option {
	return func(c *Chunker) { c.readSize = max(Align, alignUp(n)) }
}

// WithWorkers sets how many goroutines hash the chunks of a full scan
// (Chunks, All); the default is GOMAXPROCS. Rehash hashes on the caller's
// goroutine.
func WithWorkers(n int) Option {
	return func(c *Chunker) { c.workers = max(1, n) }
}

// NewChunker returns a chunker for p, or an error wrapping ErrParams.
func NewChunker(p Params, opts ...Option) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	c := &Chunker{params: p, cut: newCutter(p), readSize: DefaultReadSize, workers: runtime.GOMAXPROCS(0)}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Params returns the chunker's parameters.
func (c *Chunker) Params() Params { return c.params }

// Boundary returns the length of the chunk that starts at data[0]; atEOF
// tells whether the input ends with data. ok is false when more data is
// needed to decide (never once len(data) >= Params.Max).
func (c *Chunker) Boundary(data []byte, atEOF bool) (n int, ok bool) {
	return c.cut.boundary(data, atEOF)
}

// Chunks splits the volume r of size bytes into chunks and calls fn for each
// in order, with the chunk's bytes (valid only during the call). It returns
// the number of bytes read from r. An error from fn stops the scan and is
// returned as is.
func (c *Chunker) Chunks(ctx context.Context, r io.ReaderAt, size uint64, fn func(Chunk, []byte) error) (bytesRead uint64, err error) {
	s := c.newScanner(r, size, nil)
	var (
		chunks []Chunk
		datas  [][]byte
	)
	for pos := uint64(0); pos < size; {
		// Cut every chunk the buffer holds (reading only for the first),
		// hash them on the workers, then hand them out in order.
		data, err := s.cutAt(ctx, pos)
		if err != nil {
			return s.bytesRead, err
		}
		chunks, datas = chunks[:0], datas[:0]
		for next := pos; ; {
			chunks = append(chunks, Chunk{Offset: next, Length: uint64(len(data))})
			datas = append(datas, data)
			next += uint64(len(data))
			var ok bool
			if data, ok = s.tryCut(next); !ok {
				break
			}
		}
		c.hashAll(chunks, datas)
		for i, ch := range chunks {
			if err := fn(ch, datas[i]); err != nil {
				return s.bytesRead, err
			}
		}
		pos = chunks[len(chunks)-1].End()
	}
	return s.bytesRead, nil
}

// hashAll fills in the IDs and fingerprints of chunks, whose bytes are
// datas, on up to c.workers goroutines.
func (c *Chunker) hashAll(chunks []Chunk, datas [][]byte) {
	workers := min(c.workers, len(chunks))
	if workers <= 1 {
		for i := range chunks {
			chunks[i] = NewChunk(chunks[i].Offset, datas[i])
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(chunks); i += workers {
				chunks[i] = NewChunk(chunks[i].Offset, datas[i])
			}
		})
	}
	wg.Wait()
}

// All returns the chunk list of the volume r of size bytes and the number of
// bytes read.
func (c *Chunker) All(ctx context.Context, r io.ReaderAt, size uint64) ([]Chunk, uint64, error) {
	list := make([]Chunk, 0, size/uint64(c.params.Avg)+1)
	n, err := c.Chunks(ctx, r, size, func(ch Chunk, _ []byte) error {
		list = append(list, ch)
		return nil
	})
	if err != nil {
		return nil, n, err
	}
	return list, n, nil
}
