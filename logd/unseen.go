package logd

// Writes the kernel never MARKs.
//
// dm-region-hash calls mark_region only for a region in state CLEAN. A
// region the log reports out of sync enters the kernel's region hash as
// NOSYNC (or becomes NOSYNC after a failed leg write: SET_REGION_SYNC with
// in_sync 0), and writes to it go to the default leg with no MARK at all.
// The kernel's recovery later copies the region and reports it back in sync
// with SET_REGION_SYNC(region, 1); writes to a RECOVERING region wait for
// that. So a mirror created without nosync (the whole volume out of sync)
// gets writes that never reach a log's MARK while its initial resync runs,
// and the replicator could have copied such a region before the write.
//
// The core closes that hole: a region that the kernel learnt is out of sync
// (an IN_SYNC answered "no", or SET_REGION_SYNC 0) is "unseen". When the
// kernel reports it back in sync, every write it took unmarked is on the
// default leg, so the region is made pending with a new generation (which
// also refuses a replica acknowledgement of a copy read before), durably
// before the reply. A region never asked about is not made pending: the
// kernel cannot have written it unmarked (reads and writes ask IN_SYNC
// first). After a restart every out-of-sync region counts as unseen: the
// kernel keeps the answers of the previous daemon in its region hash.

// regionSynced handles SET_REGION_SYNC of region r.
func (c *Core) regionSynced(v *volume, r uint64, in bool) {
	if !in {
		v.unseen.set(r, true)
		return
	}
	if !v.unseen.set(r, false) {
		return
	}
	_, was := v.pending[r]
	v.meta.NextGen++
	v.pending[r] = v.meta.NextGen
	c.touchPending(v, r)
	c.needSync, c.critical = true, true
	if !was {
		c.notify(v)
	}
}

// restoreUnseen marks every out-of-sync region unseen (see above).
func (v *volume) restoreUnseen() {
	for r := v.inSync.nextClear(0); r < v.meta.Regions; r = v.inSync.nextClear(r + 1) {
		v.unseen.set(r, true)
	}
}
