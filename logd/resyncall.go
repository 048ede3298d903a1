package logd

import "fmt"

// ResyncAll forgets what the store knew of the volume: every region
// becomes pending with a new generation (the replicator sends all of it)
// and marked (a table load's RESUME makes it out of sync, so the kernel
// resyncs the legs; at a reconnect the marks expire as stale, since the
// kernel kept its own state). It is the way back after the store lost
// marks, as DRBD resyncs in full after losing its bitmap.
func (c *Core) ResyncAll(uuid string) error {
	if c.inReady {
		panic("logd: ResyncAll between Ready and Advance")
	}
	v, ok := c.vols[uuid]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownVolume, uuid)
	}
	if err := c.PendAll(uuid); err != nil {
		return err
	}
	for r := uint64(0); r < v.meta.Regions; r++ {
		if v.marked.set(r, true) {
			c.touchChunk(v, &v.dirtyMarked, r/ChunkBits)
		}
	}
	c.needSync, c.critical = true, true
	return nil
}
