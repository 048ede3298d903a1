package logd

import (
	"fmt"
	"slices"
)

// volume is the state of one log, keyed by UUID. Table reloads bring a new
// luid each; all instances of one UUID share the state.
type volume struct {
	uuid      string
	meta      VolumeMeta
	luids     []uint64 // constructed table instances
	attached  bool     // serving requests (false after the last DTR)
	restored  bool     // loaded from the store, no request seen since
	suspended bool

	reconnecting  bool   // CTR was the kernel's reconnect (trailing NUL): the next RESUME keeps state
	stale         bitset // marks found at a reconnect, cleared at staleDeadline unless re-MARKed
	staleDeadline uint64

	inSync  bitset            // bit set: legs known equal
	marked  bitset            // bit set: MARKed, not yet CLEARed
	unseen  bitset            // bit set: out of sync and maybe written with no MARK (see unseen.go)
	pending map[uint64]uint64 // region -> generation, until Replicated

	// What the store holds as of the last sync.
	durMarked  bitset // marked bits
	durPending bitset // pending membership

	resyncCursor uint64 // GET_RESYNC_WORK search start; reset on RESUME
	syncHint     uint64 // no region below it is out of sync

	// Dirty keys since the last Ready.
	inDirty      bool
	dirtyMeta    bool
	dirtyInSync  map[uint64]struct{}
	dirtyMarked  map[uint64]struct{}
	dirtyPending map[uint64]struct{}
}

func newVolume(uuid string, meta VolumeMeta) *volume {
	return &volume{
		uuid: uuid, meta: meta,
		inSync: newBitset(meta.Regions), marked: newBitset(meta.Regions), unseen: newBitset(meta.Regions),
		pending:   make(map[uint64]uint64),
		durMarked: newBitset(meta.Regions), durPending: newBitset(meta.Regions),
	}
}

// ctr constructs (or re-attaches) the log named by the request's UUID.
func (c *Core) ctr(m *Message) {
	a, err := ParseCtrArgs(m.Req.Data)
	if err != nil {
		c.fail(m, errnoINVAL, err.Error())
		return
	}
	uuid := string(m.Req.UUIDBytes())
	if uuid == "" {
		c.fail(m, errnoINVAL, "CTR without a uuid")
		return
	}
	v := c.vols[uuid]
	if v != nil {
		if v.meta.RegionSectors != a.RegionSectors || v.meta.Regions != a.Regions() {
			c.fail(m, errnoINVAL, fmt.Sprintf(
				"%s: stored log has %d regions of %d sectors, table asks for %d regions of %d sectors; "+
					"keep the region size and device length, or use a new log uuid",
				ErrBadTable, v.meta.Regions, v.meta.RegionSectors, a.Regions(), a.RegionSectors))
			return
		}
		if v.meta.Table != a.Table || v.meta.Sectors != a.Sectors {
			v.meta.Table, v.meta.Sectors = a.Table, a.Sectors
			c.touchMeta(v)
			c.critical = true
		}
		if a.Sync == SyncForce && !isReconnect(m) && !slices.Contains(v.luids, m.Req.Luid) {
			c.fillInSync(v, false)
		}
	} else {
		v = newVolume(uuid, VolumeMeta{RegionSectors: a.RegionSectors, Regions: a.Regions(), Sectors: a.Sectors, Table: a.Table})
		c.vols[uuid] = v
		c.touchMeta(v)
		c.critical = true
		c.fillInSync(v, a.Sync == SyncNone)
		c.note(m, NoteInfo, fmt.Sprintf("new log: %d regions of %d sectors (%s)", v.meta.Regions, v.meta.RegionSectors, a.Table))
	}
	if !slices.Contains(v.luids, m.Req.Luid) {
		v.luids = append(v.luids, m.Req.Luid)
	}
	if isReconnect(m) {
		v.reconnecting = true
	}
	v.attached, v.restored = true, false
	c.needSync = true
	c.reply(m, 0) // no data: data would name a log device
}

// isReconnect reports whether a CTR is the kernel's reconnect
// (userspace_do_request after -ESRCH), which sends the CTR string with its
// NUL; a table load sends it without.
func isReconnect(m *Message) bool {
	d := m.Req.Data
	return len(d) > 0 && d[len(d)-1] == 0
}

func (c *Core) fillInSync(v *volume, in bool) {
	c.critical = true
	v.inSync.fill(in)
	v.syncHint = 0
	v.resyncCursor = 0
	for ch := range v.inSync.chunks() {
		c.touchChunk(v, &v.dirtyInSync, ch)
	}
}

// Dirty tracking.

func (c *Core) touch(v *volume) {
	if !v.inDirty {
		v.inDirty = true
		c.dirty = append(c.dirty, v)
	}
}

func (c *Core) touchMeta(v *volume) {
	v.dirtyMeta = true
	c.touch(v)
}

func (c *Core) touchChunk(v *volume, set *map[uint64]struct{}, ch uint64) {
	if *set == nil {
		*set = make(map[uint64]struct{})
	}
	(*set)[ch] = struct{}{}
	c.touch(v)
}

func (c *Core) touchPending(v *volume, r uint64) {
	if v.dirtyPending == nil {
		v.dirtyPending = make(map[uint64]struct{})
	}
	v.dirtyPending[r] = struct{}{}
	v.dirtyMeta = true // NextGen moved
	c.touch(v)
}

// HasReady reports whether Ready has anything to hand out.
func (c *Core) HasReady() bool {
	return len(c.rd.Replies) > 0 || len(c.rd.Notes) > 0 || len(c.rd.Notify) > 0 ||
		(c.needSync && c.critical)
}

// Ready returns the accumulated work; see Ready's doc for the handling
// order. Call Advance when done.
//
// Changes are handed out only with a sync, and only when a request needs
// durability (FLUSH, CTR, RESUME, POSTSUSPEND, Replicated) while critical
// changes are dirty: a MARK's region and generation, a region going out of
// sync, a new log. Everything dirty rides along in that one synced batch
// (group commit). Other changes (a CLEAR, a region coming into sync) stay in
// memory until then: losing them in a crash only makes the kernel resync a
// region or the replicator copy it again. So the write path costs one sync
// per MARK+FLUSH, none per CLEAR+FLUSH, and no store access otherwise.
func (c *Core) Ready() Ready {
	c.inReady = true
	rd := c.rd
	rd.MustSync = c.needSync && c.critical
	if rd.MustSync {
		keep := c.dirty[:0]
		for _, v := range c.dirty {
			c.rd.Changes = v.appendChanges(c.rd.Changes, c.exact)
			if v.inDirty {
				keep = append(keep, v)
			}
		}
		clear(c.dirty[len(keep):])
		c.dirty = keep
		rd.Changes = c.rd.Changes
	}
	return rd
}

// Checkpoint makes the next Ready sync everything still dirty (for a clean
// shutdown).
func (c *Core) Checkpoint() {
	if len(c.dirty) > 0 {
		c.needSync, c.critical, c.exact = true, true, true
	}
}

// Advance tells the core that rd was handled: changes written (and synced
// if rd.MustSync), replies sent.
func (c *Core) Advance(rd Ready) {
	if rd.MustSync {
		c.critical = false
		if c.exact {
			c.lastCheckpoint = c.ticks
		}
		c.exact = false
	}
	c.needSync = false
	clear(c.rd.Replies)
	clear(c.rd.Changes)
	clear(c.rd.Notes)
	c.rd = Ready{Replies: c.rd.Replies[:0], Changes: c.rd.Changes[:0], Notes: c.rd.Notes[:0], Notify: c.rd.Notify[:0]}
	c.inReady = false
}

// appendChanges materialises the volume's dirty keys in key order and
// resets its dirty sets.
func (v *volume) appendChanges(dst []Change, exact bool) []Change {
	if v.dirtyMeta {
		dst = append(dst, Change{Kind: ChangeVolume, UUID: v.uuid, Meta: v.meta})
	}
	for _, ch := range sortedKeys(v.dirtyInSync) {
		dst = append(dst, Change{Kind: ChangeInSync, UUID: v.uuid, Chunk: ch, Words: slices.Clone(v.inSync.chunk(ch))})
	}
	for _, ch := range sortedKeys(v.dirtyMarked) {
		// Changes are handed out only in a synced Ready, so what is written
		// here is what the store holds after it.
		cur := v.marked.chunk(ch)
		if exact {
			w := slices.Clone(cur)
			dst = append(dst, Change{Kind: ChangeMarked, UUID: v.uuid, Chunk: ch, Words: w})
			v.durMarked.load(ch, w)
			delete(v.dirtyMarked, ch)
			continue
		}
		// Outside a checkpoint only new marks are written: a CLEAR written
		// now would make the region's next MARK need a sync of its own.
		dur := v.durMarked.chunk(ch)
		w := make([]uint64, len(cur))
		newBits, clears := false, false
		for i := range cur {
			w[i] = cur[i] | dur[i]
			newBits = newBits || w[i] != dur[i]
			clears = clears || w[i] != cur[i]
		}
		if newBits {
			dst = append(dst, Change{Kind: ChangeMarked, UUID: v.uuid, Chunk: ch, Words: w})
			v.durMarked.load(ch, w)
		}
		if !clears {
			delete(v.dirtyMarked, ch)
		}
	}
	for _, r := range sortedKeys(v.dirtyPending) {
		g := v.pending[r]
		dst = append(dst, Change{Kind: ChangePending, UUID: v.uuid, Region: r, Gen: g})
		v.durPending.set(r, g != 0)
	}
	v.dirtyMeta = false
	v.inDirty = len(v.dirtyMarked) > 0 // CLEARs kept for the next checkpoint
	clear(v.dirtyInSync)
	clear(v.dirtyPending)
	return dst
}

func sortedKeys(m map[uint64]struct{}) []uint64 {
	if len(m) == 0 {
		return nil
	}
	ks := make([]uint64, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
