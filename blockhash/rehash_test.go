package blockhash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// mutate applies a change set of the given kind to data in place and
// returns the changed ranges (as a dirty log would report them: possibly
// overlapping, adjacent or unsorted).
func mutate(rng *rand.Rand, data []byte, kind string) []Range {
	size := uint64(len(data))
	var rs []Range
	write := func(off, n uint64) {
		n = min(n, size-off)
		for i := off; i < off+n; i++ {
			data[i] = byte(rng.Uint32())
		}
		rs = append(rs, Range{off, n})
	}
	switch kind {
	case "scattered-4k": // 1% of the 4 KiB blocks, in place
		for range max(1, len(data)/BlockSize/100) {
			write(rng.Uint64N(size/BlockSize)*BlockSize, BlockSize)
		}
	case "scattered-bytes":
		for range 1 + rng.IntN(20) {
			write(rng.Uint64N(size), 1+rng.Uint64N(8))
		}
	case "region-rewrite":
		off := rng.Uint64N(size)
		write(off, rng.Uint64N(size/4))
	case "end":
		write(size-1-rng.Uint64N(min(size, 3000)), 3000)
	case "start":
		write(0, 1+rng.Uint64N(100))
	case "adjacent-overlapping":
		off := rng.Uint64N(size - size/8)
		for range 5 {
			n := 1 + rng.Uint64N(5000)
			write(off, n)
			off += n - rng.Uint64N(n+1)/2 // next range overlaps or touches
			if off >= size {
				break
			}
		}
	case "same-bytes": // reported as changed but rewritten with equal bytes
		rs = append(rs, Range{rng.Uint64N(size / 2), size / 4})
	case "zero-fill": // a region becomes zeros: forced Max cuts appear
		off := rng.Uint64N(size / 2)
		n := min(size/3, size-off)
		clear(data[off : off+n])
		rs = append(rs, Range{off, n})
	case "none":
	}
	rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
	return rs
}

var changeKinds = []string{"scattered-4k", "scattered-bytes", "region-rewrite", "end", "start", "adjacent-overlapping", "same-bytes", "zero-fill", "none"}

// checkRehash rehashes after the change and compares with a full re-chunk.
func checkRehash(t testing.TB, c *Chunker, before, after []byte, changes []Range) Diff {
	t.Helper()
	old := chunkAll(t, c, before)
	want := chunkAll(t, c, after)
	got, d, err := c.Rehash(context.Background(), "vol", bytes.NewReader(after), uint64(len(after)), old, changes)
	if err != nil {
		t.Fatal(err)
	}
	if !equalChunks(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("rehash differs from a full re-chunk at chunk %d: got [%d,+%d) want [%d,+%d); changes %v", i, got[i].Offset, got[i].Length, want[i].Offset, want[i].Length, changes)
			}
		}
		t.Fatalf("rehash has %d chunks, full re-chunk %d", len(got), len(want))
	}
	if err := checkDiff(old, want, d); err != nil {
		t.Fatal(err)
	}
	return d
}

// checkDiff verifies old - Removed + Added == new.
func checkDiff(old, new []Chunk, d Diff) error {
	m := map[Chunk]int{}
	for _, c := range old {
		m[c]++
	}
	for _, c := range d.Removed {
		if m[c] == 0 {
			return fmt.Errorf("removed chunk at %d was not in the old list", c.Offset)
		}
		m[c]--
	}
	for _, c := range d.Added {
		m[c]++
	}
	for _, c := range new {
		if m[c] == 0 {
			return fmt.Errorf("chunk at %d of the new list is missing after applying the diff", c.Offset)
		}
		m[c]--
	}
	for c, n := range m {
		if n != 0 {
			return fmt.Errorf("chunk at %d left over after applying the diff", c.Offset)
		}
	}
	return nil
}

func TestRehashEqualsFullRechunk(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	c := mustChunker(t, testParams)
	for iter := range 150 {
		kind := changeKinds[iter%len(changeKinds)]
		size := 1 + rng.IntN(512<<10)
		var before []byte
		if iter%3 == 0 {
			before = plaintextBytes(uint64(iter), size)
		} else {
			before = randomBytes(uint64(iter), size)
		}
		after := bytes.Clone(before)
		var changes []Range
		for range 1 + rng.IntN(3) {
			changes = append(changes, mutate(rng, after, kind)...)
		}
		t.Run(fmt.Sprintf("%d-%s-%d", iter, kind, size), func(t *testing.T) {
			d := checkRehash(t, c, before, after, changes)
			if kind == "none" && (d.BytesRead != 0 || len(d.Added)+len(d.Removed) != 0) {
				t.Errorf("no change: read %d bytes, diff %d/%d", d.BytesRead, len(d.Removed), len(d.Added))
			}
			if kind == "same-bytes" && len(d.Added)+len(d.Removed) != 0 {
				t.Errorf("unchanged bytes produced a diff of %d/%d chunks", len(d.Removed), len(d.Added))
			}
		})
	}
}

func TestRehashReadsLittle(t *testing.T) {
	// One 4 KiB write in a 16 MiB volume with default parameters reads
	// about one chunk, not the volume.
	before := randomBytes(50, 16<<20)
	after := bytes.Clone(before)
	copy(after[10<<20:], randomBytes(51, BlockSize))
	d := checkRehash(t, mustChunker(t, DefaultParams()), before, after, []Range{{10 << 20, BlockSize}})
	if d.BytesRead > 1<<20 {
		t.Errorf("read %d bytes for one 4 KiB change", d.BytesRead)
	}
	if len(d.Added) == 0 || len(d.Added) > 3 {
		t.Errorf("%d chunks added for one 4 KiB change", len(d.Added))
	}
	t.Logf("one 4 KiB write: read %d bytes, %d chunks removed, %d added", d.BytesRead, len(d.Removed), len(d.Added))
}

// failingReader fails every read that reaches past failAt.
type failingReader struct {
	r      io.ReaderAt
	failAt int64
}

var errDisk = errors.New("injected I/O error")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		return 0, errDisk
	}
	return f.r.ReadAt(p, off)
}

func TestRehashErrors(t *testing.T) {
	c := mustChunker(t, testParams)
	data := randomBytes(60, 300000)
	old := chunkAll(t, c, data)
	saved := slices.Clone(old)
	ctx := context.Background()
	change := []Range{{200000, 10}}

	t.Run("read-error", func(t *testing.T) {
		list, _, err := c.Rehash(ctx, "vol7", failingReader{bytes.NewReader(data), 150000}, uint64(len(data)), old, []Range{{1000, 10}, {200000, 10}})
		if !errors.Is(err, errDisk) || list != nil || !strings.Contains(err.Error(), `"vol7"`) || !strings.Contains(err.Error(), "offset ") {
			t.Fatalf("list %d, err = %v", len(list), err)
		}
	})
	t.Run("device-shorter", func(t *testing.T) {
		_, _, err := c.Rehash(ctx, "vol7", bytes.NewReader(data[:290000]), 290000, old, change)
		if !errors.Is(err, ErrSizeMismatch) || !strings.Contains(err.Error(), "shorter") || !strings.Contains(err.Error(), "offset 300000") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("device-longer", func(t *testing.T) {
		longer := append(bytes.Clone(data), 1, 2, 3)
		_, _, err := c.Rehash(ctx, "vol7", bytes.NewReader(longer), uint64(len(longer)), old, change)
		if !errors.Is(err, ErrSizeMismatch) || !strings.Contains(err.Error(), "longer") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("device-truncated-under-us", func(t *testing.T) {
		// The caller believes the size, but reads come up short.
		_, _, err := c.Rehash(ctx, "vol7", bytes.NewReader(data[:250000]), uint64(len(data)), old, []Range{{260000, 5}})
		if !errors.Is(err, ErrShortRead) || !strings.Contains(err.Error(), "offset ") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("range-outside", func(t *testing.T) {
		_, _, err := c.Rehash(ctx, "vol7", bytes.NewReader(data), uint64(len(data)), old, []Range{{299999, 2}})
		if !errors.Is(err, ErrRangeOutside) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("corrupt-index", func(t *testing.T) {
		bad := slices.Clone(old)
		bad[3].Length += 7
		_, _, err := c.Rehash(ctx, "vol7", bytes.NewReader(data), uint64(len(data)), bad, change)
		if !errors.Is(err, ErrBadIndex) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", old[4].Offset)) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, _, err := c.Rehash(cctx, "vol7", bytes.NewReader(data), uint64(len(data)), old, change)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})
	if !equalChunks(old, saved) {
		t.Fatal("Rehash modified the stored list")
	}
}

func FuzzRehash(f *testing.F) {
	f.Add(uint64(1), uint32(100000), []byte{0, 0, 1, 0, 2, 0, 9, 9, 9, 9, 9, 9})
	f.Add(uint64(2), uint32(5000), []byte{255, 255, 255, 255, 255, 255})
	f.Add(uint64(3), uint32(300000), []byte{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 7, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, seed uint64, size uint32, ops []byte) {
		n := int(size % (1 << 19))
		if n == 0 || len(ops) > 600 {
			return
		}
		var before []byte
		if seed%2 == 0 {
			before = plaintextBytes(seed, n)
		} else {
			before = randomBytes(seed, n)
		}
		after := bytes.Clone(before)
		var changes []Range
		// Each 6 bytes of ops: offset (3 bytes, scaled), length (2 bytes),
		// and the fill: random, zeros, or unchanged.
		for i := 0; i+6 <= len(ops); i += 6 {
			off := (uint64(ops[i])<<16 | uint64(ops[i+1])<<8 | uint64(ops[i+2])) * uint64(n) >> 24
			l := min(uint64(ops[i+3])<<8|uint64(ops[i+4]), uint64(n)-off)
			switch ops[i+5] % 3 {
			case 0:
				copy(after[off:off+l], randomBytes(seed+uint64(i), int(l)))
			case 1:
				clear(after[off : off+l])
			}
			changes = append(changes, Range{off, l})
		}
		checkRehash(t, mustChunker(t, []Params{testParams, {FormatVersion, 64, 256, 1024}}[(seed>>1)%2]), before, after, changes)
	})
}
