package blockhash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
)

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
	data, err := s.cutAt(ctx, pos)
	if err != nil {
		return Chunk{}, nil, err
	}
	return NewChunk(pos, data), data, nil
}

// cutAt returns the bytes of the chunk that starts at volume offset
// pos < size, reading as needed. The slice is valid until the next read.
func (s *scanner) cutAt(ctx context.Context, pos uint64) ([]byte, error) {
	if pos < s.bufOff || pos > s.bufOff+uint64(s.n) {
		// A jump: start over at pos.
		s.bufOff = alignDown64(pos)
		s.n = 0
	}
	for {
		if data, ok := s.tryCut(pos); ok {
			return data, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.fill(pos); err != nil {
			return nil, err
		}
	}
}

// tryCut returns the bytes of the chunk that starts at pos if the buffer
// holds enough to decide its end, without reading.
func (s *scanner) tryCut(pos uint64) ([]byte, bool) {
	if pos < s.bufOff {
		return nil, false
	}
	end := s.bufOff + uint64(s.n)
	rel := pos - s.bufOff
	if rel > uint64(s.n) || (rel == uint64(s.n) && end != s.size) || pos >= s.size {
		return nil, false
	}
	data := s.buf[rel:s.n]
	n, ok := s.c.cut.boundary(data, end == s.size)
	return data[:n], ok
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
	return int(max(min(alignUp64(target-off), uint64(s.c.readSize)), Align))
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

func alignUp64(n uint64) uint64 { return (n + Align - 1) &^ (Align - 1) }
