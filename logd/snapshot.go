package logd

import (
	"fmt"
	"maps"
	"slices"
)

// VolumeSnapshot is one volume's durable state, as a store loads it.
// Bitmap chunks that are absent are all zero.
type VolumeSnapshot struct {
	UUID    string
	Meta    VolumeMeta
	InSync  map[uint64][]uint64 // chunk -> words
	Marked  map[uint64][]uint64 // chunk -> words
	Pending map[uint64]uint64   // region -> generation
}

// genEpochBits: a restart moves NextGen to the next multiple of 2^32.
const genEpochBits = 32

// Restore loads volumes recovered from the store after a restart. Their
// marked set may be stale (CLEARs of the last seconds were not written). The
// first request for a restored log decides what happened: a CTR without a
// trailing NUL is a table load after a reboot (its RESUME makes the regions
// still marked out of sync, so the kernel resyncs them); a reconnect CTR
// (with the NUL) or any other request means the kernel's table stayed live
// while the daemon restarted, and its state stands. Restore fails on state
// that cannot have been written by Core.
func (c *Core) Restore(snaps []VolumeSnapshot) error {
	for _, s := range snaps {
		m := s.Meta
		if s.UUID == "" || len(s.UUID) >= UUIDLen {
			return fmt.Errorf("restore: bad uuid %q", s.UUID)
		}
		if m.Regions == 0 || m.Regions > MaxRegions || m.RegionSectors < MinRegionSectors ||
			m.RegionSectors&(m.RegionSectors-1) != 0 {
			return fmt.Errorf("restore %s: bad geometry %d regions of %d sectors", s.UUID, m.Regions, m.RegionSectors)
		}
		// Generations handed out after the last sync were lost: skip a whole
		// epoch so that none is ever reused for a region.
		m.NextGen = (m.NextGen>>genEpochBits + 1) << genEpochBits
		v := newVolume(s.UUID, m)
		v.restored = true
		for ch, w := range s.InSync {
			if ch >= v.inSync.chunks() {
				return fmt.Errorf("restore %s: in-sync chunk %d beyond %d regions", s.UUID, ch, m.Regions)
			}
			v.inSync.load(ch, w)
		}
		v.restoreUnseen()
		for ch, w := range s.Marked {
			if ch >= v.marked.chunks() {
				return fmt.Errorf("restore %s: marked chunk %d beyond %d regions", s.UUID, ch, m.Regions)
			}
			v.marked.load(ch, w)
			v.durMarked.load(ch, w)
		}
		for r, g := range s.Pending {
			if r >= m.Regions || g == 0 || g > m.NextGen {
				return fmt.Errorf("restore %s: pending region %d gen %d (regions %d, next gen %d)", s.UUID, r, g, m.Regions, m.NextGen)
			}
			v.pending[r] = g
			v.durPending.set(r, true)
		}
		c.vols[s.UUID] = v
		// Persist the new epoch before any generation of it is handed out.
		c.touchMeta(v)
		c.needSync, c.critical = true, true
	}
	return nil
}

// Snapshot returns the volume's state in the form Restore takes, with
// all-zero chunks left out.
func (c *Core) Snapshot(uuid string) (VolumeSnapshot, bool) {
	v := c.vols[uuid]
	if v == nil {
		return VolumeSnapshot{}, false
	}
	s := VolumeSnapshot{UUID: uuid, Meta: v.meta, InSync: map[uint64][]uint64{}, Marked: map[uint64][]uint64{},
		Pending: maps.Clone(v.pending)}
	for ch := range v.inSync.chunks() {
		if w := v.inSync.chunk(ch); !allZero(w) {
			s.InSync[ch] = slices.Clone(w)
		}
		if w := v.marked.chunk(ch); !allZero(w) {
			s.Marked[ch] = slices.Clone(w)
		}
	}
	return s, true
}

func allZero(w []uint64) bool {
	for _, x := range w {
		if x != 0 {
			return false
		}
	}
	return true
}

// Volumes lists the known volume UUIDs in order.
func (c *Core) Volumes() []string {
	return slices.Sorted(maps.Keys(c.vols))
}

// Geometry reports a volume's region size in bytes and region count.
func (c *Core) Geometry(uuid string) (regionBytes, regions uint64, err error) {
	v := c.vols[uuid]
	if v == nil {
		return 0, 0, fmt.Errorf("%w %q", ErrUnknownVolume, uuid)
	}
	return v.meta.RegionSectors * 512, v.meta.Regions, nil
}

// Pending lists the volume's pending regions in ascending order.
func (c *Core) Pending(uuid string) ([]PendingRegion, error) {
	v := c.vols[uuid]
	if v == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownVolume, uuid)
	}
	out := make([]PendingRegion, 0, len(v.pending))
	for r, g := range v.pending {
		out = append(out, PendingRegion{Region: r, Gen: g})
	}
	slices.SortFunc(out, func(a, b PendingRegion) int {
		switch {
		case a.Region < b.Region:
			return -1
		case a.Region > b.Region:
			return 1
		}
		return 0
	})
	return out, nil
}

func (c *Core) volRegion(uuid string, r uint64) (*volume, error) {
	v := c.vols[uuid]
	if v == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownVolume, uuid)
	}
	if r >= v.meta.Regions {
		return nil, fmt.Errorf("%w: region %d of %q, which has %d", ErrRegionRange, r, uuid, v.meta.Regions)
	}
	return v, nil
}

// Quiet reports whether the region has no outstanding MARK.
func (c *Core) Quiet(uuid string, r uint64) (bool, error) {
	v, err := c.volRegion(uuid, r)
	if err != nil {
		return false, err
	}
	return !v.marked.get(r), nil
}

// Replicated removes the region from the pending set if its generation is
// still gen and it is quiet (a write in flight could postdate what the
// peer got). The removal is durable once the next Ready is synced: it sets
// MustSync.
func (c *Core) Replicated(uuid string, r, gen uint64) (bool, error) {
	if c.inReady {
		panic("logd: Replicated between Ready and Advance")
	}
	v, err := c.volRegion(uuid, r)
	if err != nil {
		return false, err
	}
	if g, ok := v.pending[r]; !ok || g != gen || v.marked.get(r) {
		return false, nil
	}
	delete(v.pending, r)
	c.touchPending(v, r)
	c.needSync, c.critical = true, true
	return true, nil
}
