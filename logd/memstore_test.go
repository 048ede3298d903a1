package logd

import (
	"maps"
	"slices"
	"sort"
)

// memStore models a store with a volatile write buffer: Apply writes,
// a synced Apply makes everything written so far durable, and crash keeps
// only what was durable.
type memStore struct {
	written, durable map[string]*VolumeSnapshot
	syncs            int
}

func newMemStore() *memStore {
	return &memStore{written: map[string]*VolumeSnapshot{}, durable: map[string]*VolumeSnapshot{}}
}

func cloneSnap(s *VolumeSnapshot) *VolumeSnapshot {
	c := &VolumeSnapshot{UUID: s.UUID, Meta: s.Meta, InSync: map[uint64][]uint64{}, Marked: map[uint64][]uint64{},
		Pending: maps.Clone(s.Pending)}
	for k, w := range s.InSync {
		c.InSync[k] = slices.Clone(w)
	}
	for k, w := range s.Marked {
		c.Marked[k] = slices.Clone(w)
	}
	return c
}

func cloneAll(m map[string]*VolumeSnapshot) map[string]*VolumeSnapshot {
	out := map[string]*VolumeSnapshot{}
	for k, s := range m {
		out[k] = cloneSnap(s)
	}
	return out
}

func (s *memStore) apply(rd Ready) {
	for _, ch := range rd.Changes {
		v := s.written[ch.UUID]
		if v == nil {
			v = &VolumeSnapshot{UUID: ch.UUID, InSync: map[uint64][]uint64{}, Marked: map[uint64][]uint64{}, Pending: map[uint64]uint64{}}
			s.written[ch.UUID] = v
		}
		switch ch.Kind {
		case ChangeVolume:
			v.Meta = ch.Meta
		case ChangeInSync, ChangeMarked:
			m := v.InSync
			if ch.Kind == ChangeMarked {
				m = v.Marked
			}
			if allZero(ch.Words) {
				delete(m, ch.Chunk)
			} else {
				m[ch.Chunk] = slices.Clone(ch.Words)
			}
		case ChangePending:
			if ch.Gen == 0 {
				delete(v.Pending, ch.Region)
			} else {
				v.Pending[ch.Region] = ch.Gen
			}
		}
	}
	if rd.MustSync {
		s.durable = cloneAll(s.written)
		s.syncs++
	}
}

// crash drops unsynced writes and returns the durable state to restore.
func (s *memStore) crash() []VolumeSnapshot {
	s.written = cloneAll(s.durable)
	return s.snapshots(s.durable)
}

func (s *memStore) snapshots(m map[string]*VolumeSnapshot) []VolumeSnapshot {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	var out []VolumeSnapshot
	for _, k := range keys {
		out = append(out, *cloneSnap(m[k]))
	}
	return out
}
