package blockhash

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// spliceCase draws windows over list (at its chunk boundaries) and new
// chunks tiling them; want is list with the windows replaced.
func spliceCase(rng *rand.Rand, list []Chunk, k int) (windows []Range, fresh, want []Chunk) {
	cuts := map[int]bool{}
	for range 2 * k {
		cuts[rng.IntN(len(list)+1)] = true
	}
	idx := make([]int, 0, len(cuts))
	for i := range cuts {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	next := 0
	for p := 0; p+1 < len(idx); p += 2 {
		s, e := idx[p], idx[p+1]
		w := Range{Off: list[s].Offset, Len: list[e-1].End() - list[s].Offset}
		windows = append(windows, w)
		want = append(want, list[next:s]...)
		for at := w.Off; at < w.End(); {
			l := min(w.End()-at, 1+rng.Uint64N(w.Len))
			c := Chunk{Offset: at, Length: l}
			if rng.IntN(4) > 0 {
				for j := range c.ID {
					c.ID[j] = byte(rng.Uint32())
				}
			} // else a hole-like zero ID
			fresh = append(fresh, c)
			want = append(want, c)
			at += l
		}
		next = e
	}
	return windows, fresh, append(want, list[next:]...)
}

func TestTreeSpliceEqualsRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 31))
	for iter := range 300 {
		n := 1 + rng.IntN([]int{3, 80, 2500}[iter%3])
		list := syntheticChunks(rng, n)
		old := NewTree(list)
		windows, fresh, want := spliceCase(rng, list, 1+rng.IntN(6))
		got, err := old.Splice(windows, fresh)
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		if !equalTrees(got, NewTree(want)) {
			t.Fatalf("iter %d (n=%d, %d windows): Splice differs from NewTree", iter, n, len(windows))
		}
		if !equalTrees(old, NewTree(list)) {
			t.Fatal("Splice modified the old tree")
		}
	}
}

func TestTreeSpliceRefuses(t *testing.T) {
	list := []Chunk{{Offset: 0, Length: 10}, {Offset: 10, Length: 10}, {Offset: 20, Length: 10}}
	tree := NewTree(list)
	for _, tc := range []struct {
		name    string
		windows []Range
		fresh   []Chunk
		want    string
	}{
		{"window starts mid-chunk", []Range{{5, 5}}, []Chunk{{Offset: 5, Length: 5}}, "does not start at a chunk boundary"},
		{"window ends mid-chunk", []Range{{0, 15}}, []Chunk{{Offset: 0, Length: 15}}, "does not end at a chunk boundary"},
		{"windows out of order", []Range{{10, 10}, {0, 10}}, []Chunk{{Offset: 10, Length: 10}}, "starts before the last window ends"},
		{"gap in the new chunks", []Range{{0, 20}}, []Chunk{{Offset: 0, Length: 5}, {Offset: 10, Length: 10}}, "does not tile"},
		{"new chunks fall short", []Range{{0, 20}}, []Chunk{{Offset: 0, Length: 15}}, "covered only up to byte 15"},
		{"new chunk past the window", []Range{{0, 10}}, []Chunk{{Offset: 0, Length: 20}}, "does not tile"},
		{"new chunk outside every window", []Range{{0, 10}}, []Chunk{{Offset: 0, Length: 10}, {Offset: 20, Length: 10}}, "outside every window"},
		{"empty window", []Range{{10, 0}}, nil, "empty window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tree.Splice(tc.windows, tc.fresh)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := NewTree(nil).Splice([]Range{{0, 1}}, []Chunk{{Offset: 0, Length: 1}}); err == nil {
		t.Fatal("splice into an empty tree succeeded")
	}
}

func FuzzTreeSplice(f *testing.F) {
	f.Add(uint64(1), uint16(100), uint8(3))
	f.Add(uint64(2), uint16(1), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16, k uint8) {
		if n == 0 {
			return
		}
		rng := rand.New(rand.NewPCG(seed, 2))
		list := syntheticChunks(rng, int(n%4096)+1)
		windows, fresh, want := spliceCase(rng, list, int(k%16)+1)
		got, err := NewTree(list).Splice(windows, fresh)
		if err != nil {
			t.Fatal(err)
		}
		if !equalTrees(got, NewTree(want)) {
			t.Fatal("Splice differs from NewTree")
		}
	})
}
