package rpc

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dmsync/dmsync/blockhash"
)

func smallCDC(t testing.TB) *blockhash.Chunker {
	t.Helper()
	c, err := blockhash.NewChunker(blockhash.Params{Version: blockhash.FormatVersion, Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randomVolume(rng *rand.Rand, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	copy(b[size/3:], make([]byte, 40<<10)) // zeros: forced cuts at Max
	return b
}

// cutAll cuts regions in the given order and checks each result.
func cutAll(t *testing.T, k *CDCChunker, vol []byte, regions []uint64, regionSize uint64) {
	t.Helper()
	size := uint64(len(vol))
	for _, r := range regions {
		start := r * regionSize
		end := min(start+regionSize, size)
		rg, data, err := k.Cut(bytes.NewReader(vol), size, start, end)
		if err != nil {
			t.Fatal(err)
		}
		if rg.Start > start || rg.End < end || !bytes.Equal(data, vol[rg.Start:rg.End]) {
			t.Fatalf("region %d: range [%d,%d) for [%d,%d) or wrong bytes", r, rg.Start, rg.End, start, end)
		}
		pos := rg.Start
		for _, c := range rg.Chunks {
			if c.Offset != pos || c.ID != Sum(vol[c.Offset:c.End()]) {
				t.Fatalf("region %d: chunk at %d does not tile or hash", r, c.Offset)
			}
			pos = c.End()
		}
		if pos != rg.End {
			t.Fatalf("region %d: chunks end at %d, range at %d", r, pos, rg.End)
		}
	}
}

func fullList(t *testing.T, c *blockhash.Chunker, vol []byte) []blockhash.Chunk {
	t.Helper()
	all, _, err := c.All(context.Background(), bytes.NewReader(vol), uint64(len(vol)))
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// TestCDCChunkerMatchesFullScan: after any sequence of writes, cutting the
// written regions in ascending order leaves the same chunk list as a full
// re-chunk by blockhash; starting from no list works too.
func TestCDCChunkerMatchesFullScan(t *testing.T) {
	const size, regionSize = 1 << 20, 32 << 10
	c := smallCDC(t)
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 5))
		vol := randomVolume(rng, size)
		k := NewCDCChunker(c, nil)
		var all []uint64
		for r := range uint64(size / regionSize) {
			all = append(all, r)
		}
		cutAll(t, k, vol, all, regionSize)
		if !slices.Equal(k.List(), fullList(t, c, vol)) {
			t.Fatalf("seed %d: list built region by region differs from a full scan", seed)
		}
		for round := range 4 {
			dirty := map[uint64]bool{}
			for range 1 + rng.IntN(12) {
				off := rng.IntN(size - 1)
				l := 1 + rng.IntN(min(9000, size-off-1))
				switch rng.IntN(3) {
				case 0: // random bytes
					for i := range l {
						vol[off+i] = byte(rng.Uint32())
					}
				case 1: // zeros
					clear(vol[off : off+l])
				case 2: // copy of other content
					src := rng.IntN(size - l)
					copy(vol[off:off+l], vol[src:src+l])
				}
				for r := uint64(off) / regionSize; r <= uint64(off+l-1)/regionSize; r++ {
					dirty[r] = true
				}
			}
			regions := slices.Sorted(func(yield func(uint64) bool) {
				for r := range dirty {
					if !yield(r) {
						return
					}
				}
			})
			cutAll(t, k, vol, regions, regionSize)
			if !slices.Equal(k.List(), fullList(t, c, vol)) {
				t.Fatalf("seed %d round %d: list differs from a full scan after cutting %v", seed, round, regions)
			}
		}
	}
}

func TestCDCSourceRootIsFresh(t *testing.T) {
	c := smallCDC(t)
	vol := randomVolume(rand.New(rand.NewPCG(1, 1)), 256<<10)
	k := NewCDCChunker(c, nil)
	r1, n1, err := SourceRoot(k, bytes.NewReader(vol), uint64(len(vol)))
	if err != nil {
		t.Fatal(err)
	}
	full := fullList(t, c, vol)
	r2, n2 := blockhash.NewTree(full).Root(), uint64(len(full))
	if r1 != r2 || n1 != n2 {
		t.Fatalf("SourceRoot %v/%d, full list %v/%d", r1, n1, r2, n2)
	}
	if len(k.List()) != 0 {
		t.Fatal("SourceRoot changed the chunker's list")
	}
}

// TestCDCChunkerStartsMidVolume: a chunker without a list (a sender after a
// restart) asked for ranges in the middle chunks from offset 0 up to them,
// and its list is a prefix of a full chunking.
func TestCDCChunkerStartsMidVolume(t *testing.T) {
	c := smallCDC(t)
	rng := rand.New(rand.NewPCG(3, 4))
	vol := randomVolume(rng, 1<<20)
	k := NewCDCChunker(c, nil)
	cutAll(t, k, vol, []uint64{9, 12}, 64<<10)
	got, full := k.List(), fullList(t, c, vol)
	if len(got) == 0 || len(got) > len(full) || !slices.Equal(got, full[:len(got)]) || got[len(got)-1].End() < 13*64<<10 {
		t.Fatal("list after a mid-volume start is not a prefix of a full chunking reaching the ranges")
	}
}
