package blockhash

import (
	"math/rand/v2"
	"testing"
)

func TestChunksIn(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 14))
	list := syntheticChunks(rng, 200)
	size := list[len(list)-1].End()
	for range 1000 {
		off := rng.Uint64N(size + 10)
		r := Range{off, rng.Uint64N(300 << 10)}
		got := ChunksIn(list, r)
		var want []Chunk
		for _, c := range list {
			if c.Offset < r.End() && c.End() > r.Off && r.Len > 0 {
				want = append(want, c)
			}
		}
		if !equalChunks(got, want) {
			t.Fatalf("ChunksIn(%v): %d chunks, want %d", r, len(got), len(want))
		}
	}
}
