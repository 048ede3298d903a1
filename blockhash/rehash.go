package blockhash

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
)

// Range is the byte range [Off, Off+Len) of a volume.
type Range struct {
	Off, Len uint64
}

// End returns the offset just past the range.
func (r Range) End() uint64 { return r.Off + r.Len }

// Diff is what a rehash changed in a volume's chunk list. Chunks present
// before and after at the same offset with the same length and ID appear in
// neither list.
type Diff struct {
	// Removed are the stored chunks that left the list, by offset.
	Removed []Chunk
	// Added are the chunks that entered the list, by offset.
	Added []Chunk
	// BytesRead is the number of bytes the rehash read from the volume.
	BytesRead uint64
	// Spans are the byte ranges that were re-chunked: each starts and
	// ends at a cut point of both the old and the new list.
	Spans []Range
}

// Errors of Rehash that callers branch on.
var (
	// ErrSizeMismatch: the device is shorter or longer than its index
	// says. The index must be rebuilt with a full scan (Chunker.All).
	ErrSizeMismatch = errors.New("device size does not match its chunk index")
	// ErrBadIndex: the stored chunk list does not tile the volume or does
	// not fit the chunking parameters.
	ErrBadIndex = errors.New("chunk index is inconsistent")
	// ErrRangeOutside: a changed range reaches past the end of the volume.
	ErrRangeOutside = errors.New("changed range outside the volume")
)

// Rehash updates old, the chunk list of volume as of its last scan, after
// the byte ranges changed were (possibly) written. size is the device's
// current size. It re-chunks from the last stored cut point at or before
// each change and keeps going past the change until a new cut point
// coincides with a stored one, then splices. The result equals a full
// re-chunk of the device, chunk for chunk.
//
// old is never modified. On any error (read error, short device, bad index,
// cancellation) Rehash returns a nil list and the caller's index stays as it
// was; errors name the volume and the offset.
func (c *Chunker) Rehash(ctx context.Context, volume string, r io.ReaderAt, size uint64, old []Chunk, changed []Range) ([]Chunk, Diff, error) {
	return c.rehash(ctx, volume, r, size, old, changed, nil)
}

// rehash is Rehash; emit, if not nil, is called with every chunk of the
// spans and its bytes (valid only during the call).
func (c *Chunker) rehash(ctx context.Context, volume string, r io.ReaderAt, size uint64, old []Chunk, changed []Range, emit func(Chunk, []byte)) ([]Chunk, Diff, error) {
	if err := c.checkIndex(volume, size, old); err != nil {
		return nil, Diff{}, err
	}
	ranges, err := normalizeRanges(volume, size, changed)
	if err != nil {
		return nil, Diff{}, err
	}
	s := c.newScanner(r, size, old)
	var d Diff
	out := make([]Chunk, 0, len(old)+len(ranges))
	oi := 0         // next old chunk not yet copied or removed
	var done uint64 // out is final up to here: a cut of old and new
	for ri := 0; ri < len(ranges); {
		if ranges[ri].End() <= done {
			ri++
			continue
		}
		// The last stored cut at or before the change (done is a stored
		// cut, so this never goes back before it).
		start := max(ranges[ri].Off, done)
		k := sort.Search(len(old), func(i int) bool { return old[i].Offset > start }) - 1
		out = append(out, old[oi:k]...)
		oi = k
		pos := old[k].Offset
		spanStart, addedFrom := pos, len(out)
		sync := k // old[sync] is the first stored chunk ending at or after pos
		for {
			s.change = Range{}
			if ri < len(ranges) {
				s.change = ranges[ri]
			}
			ch, data, err := s.next(ctx, pos)
			if err != nil {
				return nil, Diff{}, fmt.Errorf("rehash volume %q at offset %d: %w", volume, pos, err)
			}
			out = append(out, ch)
			if emit != nil {
				emit(ch, data)
			}
			pos = ch.End()
			for ri < len(ranges) && ranges[ri].End() <= pos {
				ri++
			}
			if pos == size {
				break
			}
			for old[sync].End() < pos {
				sync++
			}
			if old[sync].End() == pos && (ri == len(ranges) || ranges[ri].Off >= pos) {
				break // resynchronized: the rest of old is valid up to the next change
			}
		}
		removedFrom := oi
		for oi < len(old) && old[oi].Offset < pos {
			oi++
		}
		d.Spans = append(d.Spans, Range{spanStart, pos - spanStart})
		rem, add := diffSpan(old[removedFrom:oi], out[addedFrom:])
		d.Removed = append(d.Removed, rem...)
		d.Added = append(d.Added, add...)
		done = pos
	}
	out = append(out, old[oi:]...)
	d.BytesRead = s.bytesRead
	return out, d, nil
}

// checkIndex verifies that old tiles [0, size) with chunks that fit c's
// parameters.
func (c *Chunker) checkIndex(volume string, size uint64, old []Chunk) error {
	var off uint64
	for i, ch := range old {
		last := i == len(old)-1
		switch {
		case ch.Offset != off:
			return fmt.Errorf("%w: volume %q: chunk at offset %d, expected one at %d", ErrBadIndex, volume, ch.Offset, off)
		case ch.Length == 0 || ch.Length > uint64(c.params.Max) || (!last && ch.Length < uint64(c.params.Min)):
			return fmt.Errorf("%w: volume %q: chunk at offset %d has length %d, outside %s", ErrBadIndex, volume, ch.Offset, ch.Length, c.params)
		}
		off = ch.End()
	}
	if off != size {
		rel := "shorter"
		if size > off {
			rel = "longer"
		}
		return fmt.Errorf("%w: volume %q: device is %d bytes, %s than the index, which ends at offset %d; rebuild the index with a full scan",
			ErrSizeMismatch, volume, size, rel, off)
	}
	return nil
}

// normalizeRanges sorts the changed ranges, drops empty ones and merges
// overlapping and adjacent ones.
func normalizeRanges(volume string, size uint64, changed []Range) ([]Range, error) {
	rs := make([]Range, 0, len(changed))
	for _, r := range changed {
		if r.Len == 0 {
			continue
		}
		if r.Off >= size || r.Len > size-r.Off {
			return nil, fmt.Errorf("%w: volume %q: range [%d, %d+%d) ends past the device's %d bytes", ErrRangeOutside, volume, r.Off, r.Off, r.Len, size)
		}
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	merged := rs[:0]
	for _, r := range rs {
		if n := len(merged); n > 0 && r.Off <= merged[n-1].End() {
			merged[n-1].Len = max(merged[n-1].End(), r.End()) - merged[n-1].Off
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

// diffSpan returns the chunks of old not in new and of new not in old; both
// cover the same span and are sorted by offset.
func diffSpan(old, new []Chunk) (removed, added []Chunk) {
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		switch {
		case i < len(old) && j < len(new) && old[i] == new[j]:
			i++
			j++
		case j == len(new) || (i < len(old) && old[i].Offset < new[j].Offset):
			removed = append(removed, old[i])
			i++
		case i == len(old) || new[j].Offset < old[i].Offset:
			added = append(added, new[j])
			j++
		default: // same offset, different chunk
			removed = append(removed, old[i])
			added = append(added, new[j])
			i++
			j++
		}
	}
	return removed, added
}
