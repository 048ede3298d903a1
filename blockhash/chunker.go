package blockhash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
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
}

// Option configures a Chunker.
type Option func(*Chunker)

// WithReadSize sets the size of the reads of a full scan (rounded up to a
// multiple of Align). Chunk boundaries never depend on it.
func WithReadSize(n int) Option {
	return func(c *Chunker) { c.readSize = max(Align, alignUp(n)) }
}

// NewChunker returns a chunker for p, or an error wrapping ErrParams.
func NewChunker(p Params, opts ...Option) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	c := &Chunker{params: p, cut: newCutter(p), readSize: DefaultReadSize}
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
	for pos := uint64(0); pos < size; {
		ch, data, err := s.next(ctx, pos)
		if err != nil {
			return s.bytesRead, err
		}
		if err := fn(ch, data); err != nil {
			return s.bytesRead, err
		}
		pos = ch.End()
	}
	return s.bytesRead, nil
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

// scanner streams a volume through an aligned buffer.
type scanner struct {
	c         *Chunker
	r         io.ReaderAt
	size      uint64 // volume size: the input ends here
	buf       []byte // Align-aligned, len = capacity in use
	bufOff    uint64 // volume offset of buf[0], a multiple of Align
	n         int    // valid bytes in buf
	bytesRead uint64

	// Rehash only: the stored chunk list and the end of the change being
	// re-chunked. Reads then stop at the first stored cut that can end
	// the chunk being built (or at the change's end, if later) instead of
	// reading a full readSize.
	stored []Chunk
	change Range
}

// newScanner returns a scanner over r. stored is nil for a full scan.
func (c *Chunker) newScanner(r io.ReaderAt, size uint64, stored []Chunk) *scanner {
	// Room for a whole max-size chunk that starts anywhere in an aligned
	// block, plus one read.
	capacity := alignUp(int(c.params.Max)+Align) + c.readSize
	return &scanner{
		c:      c,
		r:      r,
		size:   size,
		buf:    alignedBuffer(capacity),
		stored: stored,
	}
}

// next returns the chunk that starts at volume offset pos < size.
func (s *scanner) next(ctx context.Context, pos uint64) (Chunk, []byte, error) {
	if pos < s.bufOff || pos > s.bufOff+uint64(s.n) {
		// A jump: start over at pos.
		s.bufOff = alignDown64(pos)
		s.n = 0
	}
	for {
		if rel := pos - s.bufOff; rel < uint64(s.n) || (rel == uint64(s.n) && s.bufOff+uint64(s.n) == s.size) {
			data := s.buf[rel:s.n]
			if n, ok := s.c.cut.boundary(data, s.bufOff+uint64(s.n) == s.size); ok {
				return NewChunk(pos, data[:n]), data[:n], nil
			}
		}
		if err := ctx.Err(); err != nil {
			return Chunk{}, nil, err
		}
		if err := s.fill(pos); err != nil {
			return Chunk{}, nil, err
		}
	}
}

// fill drops buffered bytes before pos's aligned block and reads the next
// block of the volume after the buffered bytes.
func (s *scanner) fill(pos uint64) error {
	if keep := alignDown64(pos); keep > s.bufOff {
		drop := int(keep - s.bufOff)
		copy(s.buf, s.buf[drop:s.n])
		s.n -= drop
		s.bufOff = keep
	}
	off := s.bufOff + uint64(s.n)
	want := min(s.readLen(pos, off), len(s.buf)-s.n) // a multiple of Align
	need := min(uint64(want), s.size-off)            // bytes the volume must have
	got, err := s.r.ReadAt(s.buf[s.n:s.n+want], int64(off))
	s.bytesRead += uint64(got)
	if uint64(got) < need {
		if err == nil || errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: read at offset %d returned %d of %d bytes", ErrShortRead, off, got, need)
		}
		return fmt.Errorf("read at offset %d: %w", off, err)
	}
	s.n += int(need)
	return nil
}

// readLen returns the length of the read at off while building the chunk
// that starts at pos.
func (s *scanner) readLen(pos, off uint64) int {
	if s.stored == nil {
		return s.c.readSize
	}
	// The chunk most likely ends at the first stored cut that it may
	// end at (at least Min bytes after pos) past what is buffered.
	from := max(off, pos+uint64(s.c.params.Min))
	j := sort.Search(len(s.stored), func(i int) bool { return s.stored[i].End() > from })
	target := s.size
	if j < len(s.stored) {
		target = s.stored[j].End()
	}
	if s.change.Off < target {
		target = max(target, s.change.End())
	}
	return min(max(alignUp64(target-off), Align), s.c.readSize)
}

// alignedBuffer returns a slice of n bytes whose first byte is
// Align-aligned in memory.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+Align)
	skip := (Align - int(addrOf(b)%Align)) % Align
	return b[skip : skip+n : skip+n]
}

func alignUp(n int) int { return (n + Align - 1) &^ (Align - 1) }

func alignDown64(n uint64) uint64 { return n &^ (Align - 1) }

func alignUp64(n uint64) int { return int(min((n+Align-1)&^(Align-1), 1<<40)) }
