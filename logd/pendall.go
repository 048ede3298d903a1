package logd

import "fmt"

// PendAll makes every region of the volume pending with a new generation:
// a peer that starts receiving the volume holds none of it, so the first
// replication must go over all of it. Regions already pending get a new
// generation too, so a replication pass in flight sends them again.
func (c *Core) PendAll(uuid string) error {
	if c.inReady {
		panic("logd: PendAll between Ready and Advance")
	}
	v, ok := c.vols[uuid]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownVolume, uuid)
	}
	for r := uint64(0); r < v.meta.Regions; r++ {
		v.meta.NextGen++
		v.pending[r] = v.meta.NextGen
		c.touchPending(v, r)
	}
	c.needSync, c.critical = true, true
	c.notify(v)
	return nil
}

// PendAll makes every region of the volume pending, durably, before it
// returns (see Core.PendAll). The replication manager calls it when a
// volume starts replicating to a new peer.
func (s *Server) PendAll(uuid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	if err := s.core.PendAll(uuid); err != nil {
		return err
	}
	if !s.readyLocked(nil) {
		return s.failed
	}
	return nil
}
