package logd

import "fmt"

// PendRegions makes the given regions of the volume pending with a new
// generation each, like PendAll for just these: `dmsync verify --repair`
// found them different on the peer. A region already pending gets a new
// generation too, so a pass in flight sends it again. Every region must be
// below the volume's region count; nothing changes if one is not.
func (c *Core) PendRegions(uuid string, regions []uint64) error {
	if c.inReady {
		panic("logd: PendRegions between Ready and Advance")
	}
	v, ok := c.vols[uuid]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownVolume, uuid)
	}
	for _, r := range regions {
		if r >= v.meta.Regions {
			return fmt.Errorf("pend region %d of %q: %w (the volume has %d regions)", r, uuid, ErrRegionRange, v.meta.Regions)
		}
	}
	if len(regions) == 0 {
		return nil
	}
	for _, r := range regions {
		v.meta.NextGen++
		v.pending[r] = v.meta.NextGen
		c.touchPending(v, r)
	}
	c.needSync, c.critical = true, true
	c.notify(v)
	return nil
}

// PendRegions makes the given regions of the volume pending, durably,
// before it returns (see Core.PendRegions).
func (s *Server) PendRegions(uuid string, regions []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	if err := s.core.PendRegions(uuid, regions); err != nil {
		return err
	}
	if !s.readyLocked(nil) {
		return s.failed
	}
	return nil
}
