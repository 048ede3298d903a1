package pebble

import (
	"math/rand/v2"
	"slices"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

// TestChunksInRangesAndOverlapping: for random indexes of variable-length
// chunks and random sets of ranges (unsorted, overlapping, empty), one
// iterator's walk gives what a scan of the whole index gives: every chunk
// starting in a range (ChunksInRanges), or reaching into one
// (overlapping), once each, in offset order.
func TestChunksInRangesAndOverlapping(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for round := range 40 {
		s := memStore(t)
		var all []ReplicaChunk
		for off := uint64(r.IntN(3000)); off < 100000; {
			c := rc(off, uint32(1+r.IntN(2000)), byte(len(all)))
			all = append(all, c)
			off = c.End() + uint64(r.IntN(3)*r.IntN(2000)) // holes now and then
		}
		if err := s.CommitApplied("v", 1, []ByteRange{{0, 200000}}, all); err != nil {
			t.Fatal(err)
		}
		var ranges []ByteRange
		for range 1 + r.IntN(8) {
			a := uint64(r.IntN(110000))
			ranges = append(ranges, ByteRange{a, a + uint64(r.IntN(6000))})
		}
		var starts, reaches []ReplicaChunk
		for _, c := range all {
			for _, x := range ranges {
				if c.Offset >= x.Start && c.Offset < x.End {
					starts = append(starts, c)
					break
				}
			}
			for _, x := range ranges {
				if c.Offset < x.End && c.End() > x.Start {
					reaches = append(reaches, c)
					break
				}
			}
		}
		var got []ReplicaChunk
		if err := s.ChunksInRanges("v", ranges, func(c ReplicaChunk) error { got = append(got, c); return nil }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, starts) {
			t.Fatalf("round %d: ChunksInRanges %v gave %d chunks, want %d", round, ranges, len(got), len(starts))
		}
		// overlapping takes ranges sorted and disjoint, as CommitApplied
		// gives them (MergeRanges-shaped).
		merged := mergeForTest(ranges)
		got = nil
		if err := overlapping(s.db, "v", merged, func(c ReplicaChunk) { got = append(got, c) }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, reaches) {
			t.Fatalf("round %d: overlapping %v gave %d chunks, want %d", round, merged, len(got), len(reaches))
		}
	}
}

func mergeForTest(rs []ByteRange) []ByteRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b ByteRange) int { return int(a.Start) - int(b.Start) })
	var out []ByteRange
	for _, x := range rs {
		if x.End <= x.Start {
			continue
		}
		if n := len(out); n > 0 && x.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, x.End)
			continue
		}
		out = append(out, x)
	}
	return out
}

// TestCommitAppliedAll: several batches in one write (CommitAppliedAll, and
// ApplyPoint with a staged point) leave the index (both keys) and the
// markers as committing them one by one does: on disjoint
// ranges (merged into one batch), and where a later batch rewrites an
// earlier one's range with other chunk bounds.
func TestCommitAppliedAll(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for round := range 30 {
		one, all := memStore(t), memStore(t)
		var bs []AppliedBatch
		for i := range 2 + r.IntN(5) {
			a := uint64(r.IntN(50)) * 1000
			if round%2 == 0 {
				a = uint64(i) * 30000 // disjoint: committed as one batch
			}
			rg := ByteRange{a, a + uint64(1+r.IntN(20))*1000}
			var cs []ReplicaChunk
			for off := rg.Start; off < rg.End; {
				l := min(uint64(500+r.IntN(3000)), rg.End-off)
				cs = append(cs, rc(off, uint32(l), byte(r.IntN(4)))) // ids repeat
				off += l
			}
			bs = append(bs, AppliedBatch{Batch: uint64(i + 1), Ranges: []ByteRange{rg}, Chunks: cs})
		}
		for _, s := range []*ReplicaStore{one, all} {
			for _, b := range bs {
				if err := s.MarkApplying("v", b.Batch, b.Ranges); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, b := range bs {
			if err := one.CommitApplied("v", b.Batch, b.Ranges, b.Chunks); err != nil {
				t.Fatal(err)
			}
		}
		// all commits them as a consistency point does: staged, then
		// applied with the recovery point in one write.
		if err := all.BeginStaging("v", 77); err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			if err := all.StageBatch("v", 77, StagedBatch{Batch: b.Batch, Ranges: b.Ranges, Chunks: b.Chunks}); err != nil {
				t.Fatal(err)
			}
		}
		rp := RecoveryPoint{Seq: uint64(round + 1), Token: 77, TakenAt: 5, AppliedAt: 6}
		if err := all.ApplyPoint("v", bs, rp); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := all.Point("v"); err != nil || !ok || got != rp {
			t.Fatalf("round %d: recovery point %+v %v %v, want %+v", round, got, ok, err, rp)
		}
		if _, ok, err := all.Staging("v"); err != nil || ok {
			t.Fatalf("round %d: staging left after ApplyPoint: %v %v", round, ok, err)
		}
		if sbs, err := all.StagedBatches("v"); err != nil || len(sbs) != 0 {
			t.Fatalf("round %d: staged batches left: %d %v", round, len(sbs), err)
		}
		if a, b := listChunks(t, one, "v"), listChunks(t, all, "v"); !slices.Equal(a, b) {
			t.Fatalf("round %d: index differs:\none by one %v\nall at once %v", round, a, b)
		}
		for _, s := range []*ReplicaStore{one, all} {
			for _, c := range listChunks(t, s, "v") {
				got, ok, err := s.FindChunk("v", c.ID, func(x ReplicaChunk) bool { return x.Offset != c.Offset })
				if err != nil || !ok || got != c {
					t.Fatalf("round %d: by-id entry of %+v: %+v %v %v", round, c, got, ok, err)
				}
			}
			ip, _ := volPrefix(prefixReplicaByID, "v")
			it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: ip, UpperBound: upperBound(ip)})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for it.First(); it.Valid(); it.Next() {
				n++
			}
			it.Close()
			if want := len(listChunks(t, s, "v")); n != want {
				t.Fatalf("round %d: %d by-id entries for %d chunks", round, n, want)
			}
			if ms, err := s.Applying("v"); err != nil || len(ms) != 0 {
				t.Fatalf("round %d: markers left: %v %v", round, ms, err)
			}
		}
	}
}
