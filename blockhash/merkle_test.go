package blockhash

import (
	"bytes"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// syntheticChunks returns a chunk list of n chunks with random lengths and
// IDs: the tree needs no data.
func syntheticChunks(rng *rand.Rand, n int) []Chunk {
	list := make([]Chunk, n)
	var off uint64
	for i := range list {
		l := 16<<10 + rng.Uint64N(100<<10)
		list[i] = Chunk{Offset: off, Length: l, Fp: rng.Uint64()}
		for j := range list[i].ID {
			list[i].ID[j] = byte(rng.Uint32())
		}
		off += l
	}
	return list
}

// bruteDiff returns the merged ranges of chunks present on one side only.
func bruteDiff(a, b []Chunk) []Range {
	toNodes := func(l []Chunk) []Node {
		ns := make([]Node, len(l))
		for i, c := range l {
			ns[i] = Node{Offset: c.Offset, Length: c.Length, Hash: c.ID}
		}
		return ns
	}
	return unmatched(toNodes(a), toNodes(b))
}

// modify changes k chunks of list (new content, or split in two, or two
// merged) without changing the volume size.
func modify(rng *rand.Rand, list []Chunk, k int) []Chunk {
	out := slices.Clone(list)
	for range k {
		i := rng.IntN(len(out))
		fresh := func(off, l uint64) Chunk {
			c := Chunk{Offset: off, Length: l}
			for j := range c.ID {
				c.ID[j] = byte(rng.Uint32())
			}
			return c
		}
		switch rng.IntN(3) {
		case 0:
			out[i] = fresh(out[i].Offset, out[i].Length)
		case 1: // split
			c := out[i]
			h := c.Length / 2
			out = slices.Replace(out, i, i+1, fresh(c.Offset, h), fresh(c.Offset+h, c.Length-h))
		case 2: // merge with the next
			if i+1 < len(out) {
				out = slices.Replace(out, i, i+2, fresh(out[i].Offset, out[i].Length+out[i+1].Length))
			}
		}
	}
	return out
}

func TestTreeShape(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, n := range []int{1, 2, 3, 17, 1000, 20000} {
		list := syntheticChunks(rng, n)
		tr := NewTree(list)
		if got := tr.Level(tr.Height() - 1); len(got) != 1 || got[0].Offset != 0 || got[0].End() != list[n-1].End() {
			t.Fatalf("n=%d: top level %v", n, got)
		}
		for k := 1; k < tr.Height(); k++ {
			lv, below := tr.Level(k), tr.Level(k-1)
			next := 0
			for _, nd := range lv {
				if nd.First != next || nd.Count < 1 || nd.Count > treeMaxFanout+1 || (nd.Count < 2 && len(below) > 1) {
					t.Fatalf("n=%d level %d: node %+v (next child %d)", n, k, nd, next)
				}
				if nd.Offset != below[nd.First].Offset || nd.End() != below[nd.First+nd.Count-1].End() {
					t.Fatalf("n=%d level %d: node range does not match its children", n, k)
				}
				next += nd.Count
			}
			if next != len(below) {
				t.Fatalf("n=%d level %d covers %d of %d children", n, k, next, len(below))
			}
		}
		t.Logf("n=%d: height %d", n, tr.Height())
	}
	if NewTree(nil).Root() != ([32]byte{}) {
		t.Fatal("empty tree has a non-zero root")
	}
}

func TestTreeRootSensitivity(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	list := syntheticChunks(rng, 5000)
	root := NewTree(list).Root()
	if NewTree(slices.Clone(list)).Root() != root {
		t.Fatal("root is not deterministic")
	}
	changed := slices.Clone(list)
	changed[1234].ID[5] ^= 1
	if NewTree(changed).Root() == root {
		t.Fatal("root ignores a chunk ID")
	}
	changed = slices.Clone(list)
	changed[10].Length++
	changed[11].Offset++
	changed[11].Length--
	if NewTree(changed).Root() == root {
		t.Fatal("root ignores a chunk boundary")
	}
}

// TestTreeLocality: one changed chunk changes at most a few nodes per level.
func TestTreeLocality(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	list := syntheticChunks(rng, 20000)
	a := NewTree(list)
	for range 10 {
		b := NewTree(modify(rng, list, 1))
		for k := 0; k < min(a.Height(), b.Height()); k++ {
			if d := len(unmatched(a.Level(k), b.Level(k))); d > 3 {
				t.Fatalf("level %d: one changed chunk changes %d node ranges", k, d)
			}
		}
	}
}

func TestTreeDiff(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	const n = 16384 // a 1 GiB volume at 64 KiB chunks
	list := syntheticChunks(rng, n)
	local := NewTree(list)
	for _, k := range []int{0, 1, 4, 16, 64, 256} {
		other := modify(rng, list, k)
		remote := NewTree(other)
		got, st, err := local.Diff(remote)
		if err != nil {
			t.Fatal(err)
		}
		want := bruteDiff(list, other)
		if !slices.Equal(got, want) {
			t.Fatalf("k=%d: Diff found %d ranges, brute force %d", k, len(got), len(want))
		}
		// The descent costs O(k · fanout · height) hashes, not O(n).
		bound := 1 + 4*k*TreeFanout*remote.Height()
		if st.RemoteHashes > bound {
			t.Errorf("k=%d: %d hashes exchanged, bound %d", k, st.RemoteHashes, bound)
		}
		if st.RoundTrips > local.Height() {
			t.Errorf("k=%d: %d round trips for height %d", k, st.RoundTrips, local.Height())
		}
		t.Logf("k=%4d changes of %d chunks: %5d hashes exchanged (%.2f%% of a flat list), %d round trips, %d ranges",
			k, n, st.RemoteHashes, 100*float64(st.RemoteHashes)/n, st.RoundTrips, len(got))
		// Symmetric: the remote finds the same ranges.
		back, _, err := remote.Diff(local)
		if err != nil || !slices.Equal(back, want) {
			t.Fatalf("k=%d: reverse Diff differs: %v", k, err)
		}
	}
}

func TestTreeDiffEdgeCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	list := syntheticChunks(rng, 3)
	empty := NewTree(nil)
	full := NewTree(list)
	for _, tc := range []struct {
		a, b *Tree
		want []Range
	}{
		{empty, empty, nil},
		{empty, full, []Range{{0, list[2].End()}}},
		{full, empty, []Range{{0, list[2].End()}}},
		{full, NewTree(list[:1]), bruteDiff(list, list[:1])},
	} {
		got, _, err := tc.a.Diff(tc.b)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Diff = %v, %v; want %v", got, err, tc.want)
		}
	}
}

func FuzzTreeDiff(f *testing.F) {
	f.Add(uint64(1), uint16(100), uint8(3))
	f.Add(uint64(2), uint16(1), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16, k uint8) {
		if n == 0 {
			return
		}
		rng := rand.New(rand.NewPCG(seed, 0))
		list := syntheticChunks(rng, int(n))
		other := modify(rng, list, int(k%32))
		got, _, err := NewTree(list).Diff(NewTree(other))
		if err != nil {
			t.Fatal(err)
		}
		if want := bruteDiff(list, other); !slices.Equal(got, want) {
			t.Fatalf("Diff = %v, want %v", got, want)
		}
	})
}

func BenchmarkNewTree(b *testing.B) {
	list := syntheticChunks(rand.New(rand.NewPCG(12, 12)), 16384) // 1 GiB at 64 KiB
	for b.Loop() {
		NewTree(list)
	}
}

// TestTreeDiffScaling: for a fixed number of changes the hashes exchanged
// grow with the height (log n), not with n.
func TestTreeDiffScaling(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a tree of 256Ki chunks")
	}
	rng := rand.New(rand.NewPCG(13, 13))
	const k = 8
	var prev int
	for _, n := range []int{1 << 10, 1 << 14, 1 << 18} {
		list := syntheticChunks(rng, n)
		remote := NewTree(modify(rng, list, k))
		_, st, err := NewTree(list).Diff(remote)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("n=%7d (height %d), %d changes: %5d hashes exchanged", n, remote.Height(), k, st.RemoteHashes)
		if prev > 0 && st.RemoteHashes > 3*prev {
			t.Errorf("16x more chunks made the descent %dx costlier", st.RemoteHashes/prev)
		}
		prev = st.RemoteHashes
	}
}

// TestTreeDiffCoversChanges: after writes on the sender, the ranges the
// Merkle descent finds against the receiver's (old) tree cover every byte
// that differs between the two volumes.
func TestTreeDiffCoversChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 15))
	c := mustChunker(t, testParams)
	for iter := range 30 {
		before := randomBytes(uint64(100+iter), 1<<20)
		after := slices.Clone(before)
		var changes []Range
		for range 1 + rng.IntN(3) {
			changes = append(changes, mutate(rng, after, changeKinds[rng.IntN(len(changeKinds))])...)
		}
		old := chunkAll(t, c, before)
		list, _, err := c.Rehash(t.Context(), "v", bytesReader(after), uint64(len(after)), old, changes)
		if err != nil {
			t.Fatal(err)
		}
		ranges, _, err := NewTree(list).Diff(NewTree(old))
		if err != nil {
			t.Fatal(err)
		}
		covered := func(i uint64) bool {
			for _, r := range ranges {
				if i >= r.Off && i < r.End() {
					return true
				}
			}
			return false
		}
		for i := range before {
			if before[i] != after[i] && !covered(uint64(i)) {
				t.Fatalf("iter %d: byte %d differs but no Diff range covers it (%v)", iter, i, ranges)
			}
		}
	}
}

func bytesReader(b []byte) io.ReaderAt { return bytes.NewReader(b) }
