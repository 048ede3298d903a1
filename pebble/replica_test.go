package pebble

import (
	"fmt"
	"slices"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

func memStore(t *testing.T) *ReplicaStore {
	t.Helper()
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return NewReplicaStore(db)
}

func rc(off uint64, l uint32, id byte) ReplicaChunk {
	return ReplicaChunk{Offset: off, Length: l, ID: [32]byte{id}}
}

func listChunks(t *testing.T, s *ReplicaStore, vol string) []ReplicaChunk {
	t.Helper()
	var out []ReplicaChunk
	if err := s.Chunks(vol, func(c ReplicaChunk) error { out = append(out, c); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReplicaIndexCommitAndDrop(t *testing.T) {
	s := memStore(t)
	// Chunks of uneven length, as a CDC chunker makes them.
	first := []ReplicaChunk{rc(0, 100, 1), rc(100, 50, 2), rc(150, 200, 3), rc(350, 50, 1)}
	if err := s.MarkApplying("v", 1, []ByteRange{{0, 400}}); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitApplied("v", 1, []ByteRange{{0, 400}}, first); err != nil {
		t.Fatal(err)
	}
	if got := listChunks(t, s, "v"); !slices.Equal(got, first) {
		t.Fatalf("index %v", got)
	}
	if ms, _ := s.Applying("v"); len(ms) != 0 {
		t.Fatalf("markers left: %v", ms)
	}
	// Another volume whose name is a prefix must not see these keys.
	if got := listChunks(t, s, "v2"); len(got) != 0 {
		t.Fatalf("v2 sees %v", got)
	}
	// By id: id 1 is at 0 and 350; skip finds the other one.
	c, ok, err := s.FindChunk("v", [32]byte{1}, func(c ReplicaChunk) bool { return c.Offset == 0 })
	if err != nil || !ok || c.Offset != 350 {
		t.Fatalf("FindChunk: %v %v %v", c, ok, err)
	}
	// A range starting inside chunk [150,350) drops that chunk too.
	if err := s.DropApplied("v", []ByteRange{{200, 360}}); err != nil {
		t.Fatal(err)
	}
	if got := listChunks(t, s, "v"); !slices.Equal(got, first[:2]) {
		t.Fatalf("after drop: %v", got)
	}
	if _, ok, _ := s.FindChunk("v", [32]byte{3}, func(ReplicaChunk) bool { return false }); ok {
		t.Fatal("by-id twin of a dropped chunk survived")
	}
	var in []uint64
	s.ChunksIn("v", 50, 101, func(c ReplicaChunk) error { in = append(in, c.Offset); return nil })
	if !slices.Equal(in, []uint64{100}) {
		t.Fatalf("ChunksIn: %v", in)
	}
}

func TestReplicaMarkersCovered(t *testing.T) {
	s := memStore(t)
	s.MarkApplying("v", 1, []ByteRange{{0, 100}, {200, 300}})
	s.MarkApplying("v", 2, []ByteRange{{500, 600}})
	s.MarkApplying("v", 3, []ByteRange{{0, 50}})
	// Batch 3 commits [0,50): clears itself only.
	if err := s.CommitApplied("v", 3, []ByteRange{{0, 50}}, nil); err != nil {
		t.Fatal(err)
	}
	ms, _ := s.Applying("v")
	if len(ms) != 2 || ms[0].Batch != 1 || ms[1].Batch != 2 {
		t.Fatalf("markers %v", ms)
	}
	// Adjacent committed ranges together cover batch 1's ranges.
	s.MarkApplying("v", 4, []ByteRange{{0, 60}, {60, 150}, {150, 300}})
	if err := s.CommitApplied("v", 4, []ByteRange{{0, 60}, {60, 150}, {150, 300}}, nil); err != nil {
		t.Fatal(err)
	}
	ms, _ = s.Applying("v")
	if len(ms) != 1 || ms[0].Batch != 2 {
		t.Fatalf("markers %v", ms)
	}
}

func TestCovered(t *testing.T) {
	for _, tc := range []struct {
		m, rs []ByteRange
		want  bool
	}{
		{[]ByteRange{{0, 10}}, []ByteRange{{0, 10}}, true},
		{[]ByteRange{{0, 10}}, []ByteRange{{0, 5}, {5, 10}}, true},
		{[]ByteRange{{0, 10}}, []ByteRange{{0, 5}, {6, 10}}, false},
		{[]ByteRange{{2, 8}}, []ByteRange{{0, 10}}, true},
		{[]ByteRange{{0, 10}, {20, 30}}, []ByteRange{{0, 10}}, false},
		{[]ByteRange{{0, 10}}, nil, false},
	} {
		if got := covered(tc.m, tc.rs); got != tc.want {
			t.Errorf("covered(%v, %v) = %v", tc.m, tc.rs, got)
		}
	}
}

func TestProgressAndMeta(t *testing.T) {
	s := memStore(t)
	if _, ok, _ := s.Progress("v", "p"); ok {
		t.Fatal("progress before any")
	}
	p := SendProgress{Root: [32]byte{9}, Chunks: 3, AckedAt: 77, Batches: 2, BytesSent: 1 << 40}
	if err := s.SetProgress("v", "p", p); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s.Progress("v", "p"); !ok || got != p {
		t.Fatalf("progress %+v", got)
	}
	if err := s.RecordChunking("v", "p", "cdc"); err != nil {
		t.Fatal(err)
	}
	p.Chunking = "cdc"
	if got, ok, _ := s.Progress("v", "p"); !ok || got != p {
		t.Fatalf("progress with chunking %+v", got)
	}
	m := ReplicaMeta{Size: 1 << 30, Algorithm: "fixed-v1", Min: 1, Avg: 2, Max: 3}
	s.SetMeta("v", m)
	if got, ok, _ := s.Meta("v"); !ok || got != m {
		t.Fatalf("meta %+v", got)
	}
	if _, _, err := s.Progress("", "p"); err == nil {
		t.Fatal("empty volume name accepted")
	}
	long := fmt.Sprintf("%0256d", 0)
	if err := s.SetMeta(long, m); err == nil {
		t.Fatal("256-byte name accepted")
	}
}

func FuzzRanges(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, v []byte) {
		rs, err := decodeRanges(v)
		if err != nil {
			return
		}
		if got := encodeRanges(rs); string(got) != string(v) {
			t.Fatalf("round trip %x -> %x", v, got)
		}
	})
}

// TestReplicaMarkerShrinks: a batch cut off after writing (a crash) leaves
// its marker; the resends that rewrite its ranges may come in several
// smaller batches, and once all of them committed the replica is no longer
// "applying" (seen in the guest: B killed mid-batch stayed applying for
// good, and verify refused).
func TestReplicaMarkerShrinks(t *testing.T) {
	s := memStore(t)
	s.MarkApplying("v", 1, []ByteRange{{0, 100}, {200, 300}})
	steps := []struct {
		batch uint64
		r     []ByteRange
		left  []ByteRange
	}{
		{2, []ByteRange{{0, 100}}, []ByteRange{{200, 300}}},
		{3, []ByteRange{{250, 400}}, []ByteRange{{200, 250}}},
		{4, []ByteRange{{100, 220}}, []ByteRange{{220, 250}}},
		{5, []ByteRange{{220, 250}}, nil},
	}
	for _, st := range steps {
		s.MarkApplying("v", st.batch, st.r)
		if err := s.CommitApplied("v", st.batch, st.r, nil); err != nil {
			t.Fatal(err)
		}
		ms, err := s.Applying("v")
		if err != nil {
			t.Fatal(err)
		}
		if st.left == nil {
			if len(ms) != 0 {
				t.Fatalf("after batch %d: markers %v, want none", st.batch, ms)
			}
			continue
		}
		if len(ms) != 1 || ms[0].Batch != 1 || !slices.Equal(ms[0].Ranges, st.left) {
			t.Fatalf("after batch %d: markers %v, want batch 1 with %v", st.batch, ms, st.left)
		}
	}
}

func TestSubtractRanges(t *testing.T) {
	for _, tc := range []struct {
		m, rs, want []ByteRange
	}{
		{[]ByteRange{{0, 10}}, []ByteRange{{0, 10}}, nil},
		{[]ByteRange{{0, 10}}, []ByteRange{{2, 4}, {6, 8}}, []ByteRange{{0, 2}, {4, 6}, {8, 10}}},
		{[]ByteRange{{0, 10}, {20, 30}}, []ByteRange{{5, 25}}, []ByteRange{{0, 5}, {25, 30}}},
		{[]ByteRange{{0, 10}}, nil, []ByteRange{{0, 10}}},
		{[]ByteRange{{10, 20}}, []ByteRange{{0, 5}, {30, 40}}, []ByteRange{{10, 20}}},
	} {
		if got := subtractRanges(tc.m, tc.rs); !slices.Equal(got, tc.want) {
			t.Errorf("subtractRanges(%v, %v) = %v, want %v", tc.m, tc.rs, got, tc.want)
		}
	}
}
