package blockhash

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

func equalTrees(a, b *Tree) bool {
	if a.Height() != b.Height() {
		return false
	}
	for k := range a.Height() {
		if !slices.Equal(a.Level(k), b.Level(k)) {
			return false
		}
	}
	return true
}

// spansOf returns ranges outside which the two chunk lists are equal.
func spansOf(a, b []Chunk) []Range { return bruteDiff(a, b) }

func TestTreeUpdateEqualsRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 16))
	for iter := range 300 {
		n := 1 + rng.IntN([]int{5, 100, 3000}[iter%3])
		list := syntheticChunks(rng, n)
		old := NewTree(list)
		next := modify(rng, list, rng.IntN(1+n/10))
		if iter%4 == 0 && len(next) >= 2 {
			// Change the level's length at its end: the last groups'
			// decisions depend on it.
			l := len(next)
			if rng.IntN(2) == 0 {
				next = slices.Replace(next, l-2, l, Chunk{Offset: next[l-2].Offset, Length: next[l-2].Length + next[l-1].Length, ID: [32]byte{byte(iter), 1}})
			} else {
				c := next[l-1]
				next = slices.Replace(next, l-1, l, Chunk{Offset: c.Offset, Length: c.Length / 2, ID: [32]byte{byte(iter), 2}}, Chunk{Offset: c.Offset + c.Length/2, Length: c.Length - c.Length/2, ID: [32]byte{byte(iter), 3}})
			}
		}
		got := old.Update(next, spansOf(list, next))
		if want := NewTree(next); !equalTrees(got, want) {
			t.Fatalf("iter %d (n=%d): Update differs from NewTree (height %d vs %d)", iter, n, got.Height(), want.Height())
		}
		if !equalTrees(old, NewTree(list)) {
			t.Fatal("Update modified the old tree")
		}
	}
}

func TestTreeUpdateAfterRehash(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 17))
	c := mustChunker(t, Params{FormatVersion, 64, 256, 1024})
	data := randomBytes(17, 2<<20)
	list := chunkAll(t, c, data)
	tree := NewTree(list)
	for range 20 {
		var changes []Range
		for range 1 + rng.IntN(3) {
			changes = append(changes, mutate(rng, data, changeKinds[rng.IntN(len(changeKinds))])...)
		}
		next, d, err := c.Rehash(t.Context(), "v", bytes.NewReader(data), uint64(len(data)), list, changes)
		if err != nil {
			t.Fatal(err)
		}
		tree = tree.Update(next, d.Spans)
		if !equalTrees(tree, NewTree(next)) {
			t.Fatal("updated tree differs from a rebuilt one")
		}
		list = next
	}
}

func FuzzTreeUpdate(f *testing.F) {
	f.Add(uint64(1), uint16(100), uint8(3))
	f.Add(uint64(2), uint16(2), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16, k uint8) {
		if n == 0 {
			return
		}
		rng := rand.New(rand.NewPCG(seed, 1))
		list := syntheticChunks(rng, int(n))
		next := modify(rng, list, int(k%64))
		if !equalTrees(NewTree(list).Update(next, spansOf(list, next)), NewTree(next)) {
			t.Fatal("Update differs from NewTree")
		}
	})
}

func BenchmarkTreeUpdate(b *testing.B) {
	rng := rand.New(rand.NewPCG(18, 18))
	list := syntheticChunks(rng, 1<<20) // 64 GiB at 64 KiB
	tree := NewTree(list)
	next := modify(rng, list, 100)
	spans := spansOf(list, next)
	b.Run("update", func(b *testing.B) {
		for b.Loop() {
			tree.Update(next, spans)
		}
	})
	b.Run("rebuild", func(b *testing.B) {
		for b.Loop() {
			NewTree(next)
		}
	})
}
