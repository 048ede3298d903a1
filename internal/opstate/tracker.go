package opstate

import (
	"context"
	"sync"
	"time"
)

// Tracker wraps a Source and sets each volume's LastConsistent: the time of
// the latest snapshot in which the volume was Synced. It must see
// snapshots often (the event watcher asks every second) for the recovery
// point to be accurate to that interval.
type Tracker struct {
	src Source

	mu         sync.Mutex
	consistent map[string]consistentPoint // by volume name
}

type consistentPoint struct {
	peer string
	at   time.Time
}

// NewTracker returns a Tracker over src.
func NewTracker(src Source) *Tracker {
	return &Tracker{src: src, consistent: map[string]consistentPoint{}}
}

// Snapshot implements Source.
func (t *Tracker) Snapshot(ctx context.Context) Snapshot {
	s := t.src.Snapshot(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := map[string]bool{}
	for i := range s.Volumes {
		v := &s.Volumes[i]
		seen[v.Name] = true
		cp, ok := t.consistent[v.Name]
		if ok && cp.peer != v.Peer { // a new peer holds nothing of the old point
			ok = false
			delete(t.consistent, v.Name)
		}
		switch {
		case v.PointSeq > 0:
			// A consistency point says exactly when.
			t.consistent[v.Name] = consistentPoint{peer: v.Peer, at: v.PointTakenAt}
			v.LastConsistent = v.PointTakenAt
		case v.Synced:
			t.consistent[v.Name] = consistentPoint{peer: v.Peer, at: s.Time}
			v.LastConsistent = s.Time
		case ok:
			v.LastConsistent = cp.at
		}
	}
	for name := range t.consistent {
		if !seen[name] {
			delete(t.consistent, name)
		}
	}
	return s
}
