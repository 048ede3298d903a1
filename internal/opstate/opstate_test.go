package opstate

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

func TestPendingMap(t *testing.T) {
	for _, c := range []struct {
		name    string
		pending []uint64
		regions uint64
		cells   int
		want    []float32
	}{
		{"empty volume", nil, 0, 4, nil},
		{"none pending", nil, 8, 4, []float32{0, 0, 0, 0}},
		{"all pending", []uint64{0, 1, 2, 3, 4, 5, 6, 7}, 8, 4, []float32{1, 1, 1, 1}},
		{"one per cell", []uint64{1, 7}, 8, 4, []float32{0.5, 0, 0, 0.5}},
		{"fewer regions than cells", []uint64{2}, 3, 256, []float32{0, 0, 1}},
		{"uneven cells", []uint64{0, 9}, 10, 3, []float32{1.0 / 3, 0, 0.25}},
		{"out of range ignored", []uint64{100}, 4, 2, []float32{0, 0}},
	} {
		got := PendingMap(c.pending, c.regions, c.cells)
		if len(got) != len(c.want) {
			t.Fatalf("%s: %v, want %v", c.name, got, c.want)
		}
		for i := range got {
			if d := got[i] - c.want[i]; d > 1e-6 || d < -1e-6 {
				t.Fatalf("%s: %v, want %v", c.name, got, c.want)
			}
		}
	}
}

// Every region falls in exactly the cell whose range holds it.
func TestCellOf(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		regions := 1 + rng.Uint64N(1<<30)
		n := min(regions, 1+rng.Uint64N(512))
		r := rng.Uint64N(regions)
		c := cellOf(r, regions, n)
		if c >= n || cellStart(c, regions, n) > r || cellStart(c+1, regions, n) <= r {
			t.Fatalf("region %d of %d in cell %d of %d: [%d,%d)", r, regions, c, n,
				cellStart(c, regions, n), cellStart(c+1, regions, n))
		}
	}
}

func FuzzPendingMap(f *testing.F) {
	f.Add(uint64(10), uint64(3), 7)
	f.Fuzz(func(t *testing.T, regions, r uint64, cells int) {
		regions %= 1 << 40
		cells %= 4096
		m := PendingMap([]uint64{r}, regions, cells)
		if regions == 0 || cells <= 0 {
			if m != nil {
				t.Fatal("map of nothing")
			}
			return
		}
		var sum float32
		for _, x := range m {
			if x < 0 || x > 1 {
				t.Fatalf("fraction %v", x)
			}
			sum += x
		}
		if (r < regions) != (sum > 0) {
			t.Fatalf("region %d of %d: map sum %v", r, regions, sum)
		}
	})
}

func TestTrackerConsistentPoint(t *testing.T) {
	var cur Snapshot
	tr := NewTracker(SourceFunc(func(context.Context) Snapshot { return cur }))
	t0 := time.Unix(1000, 0)
	step := func(at int, synced bool, peer string) Volume {
		cur = Snapshot{Time: t0.Add(time.Duration(at) * time.Second), Volumes: []Volume{{Name: "v", Peer: peer, Synced: synced}}}
		return tr.Snapshot(context.Background()).Volumes[0]
	}
	if v := step(0, false, "p"); !v.LastConsistent.IsZero() {
		t.Fatalf("consistent point before any sync: %v", v.LastConsistent)
	}
	if v := step(1, true, "p"); !v.LastConsistent.Equal(t0.Add(time.Second)) {
		t.Fatalf("synced: %v", v.LastConsistent)
	}
	if v := step(5, false, "p"); !v.LastConsistent.Equal(t0.Add(time.Second)) {
		t.Fatalf("writes pending keep the old point: %v", v.LastConsistent)
	}
	if v := step(6, false, "q"); !v.LastConsistent.IsZero() {
		t.Fatalf("a new peer has no consistent point yet: %v", v.LastConsistent)
	}
}
