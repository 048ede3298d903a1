package logd

import (
	"errors"
	"fmt"
	"slices"
)

// Errno values put in dm_ulog_request.error (the kernel expects -errno).
const (
	errnoSRCH  = 3  // no such log: the kernel re-sends CTR+RESUME, then retries
	errnoINVAL = 22 // bad request or table
	errnoNOSYS = 38 // unknown request type
)

// Sentinel errors of the replicator-facing queries.
var (
	ErrUnknownVolume = errors.New("logd: unknown volume")
	ErrRegionRange   = errors.New("logd: region out of range")
)

// Core is the dirty log's pure state machine. It does no I/O and keeps no
// clock: Step decodes nothing and persists nothing, it only records what the
// caller must persist and send (see Ready). Core is not safe for concurrent
// use.
type Core struct {
	vols map[string]*volume

	rd       Ready
	dirty    []*volume // volumes with changes since the last Ready
	needSync bool      // a request in this Ready (FLUSH, CTR, ...) requires durability
	critical bool      // dirty changes whose loss could lose a write (marks, out-of-sync bits)
	inReady  bool

	ticks, lastCheckpoint uint64 // logical clock (Tick) and its value at the last checkpoint
	exact                 bool   // the next synced Ready writes the marked set exactly (CLEARs too)
}

// CheckpointTicks is how many Ticks changes that need no sync of their own
// (CLEARs, regions coming into sync) may stay in memory before a Tick
// writes them. The daemon ticks once a second.
const CheckpointTicks = 10

// Tick advances the logical clock. Every CheckpointTicks ticks, state that
// is still only in memory is written with the next Ready, so a crash makes
// the kernel resync at most the regions written in the last few seconds.
func (c *Core) Tick() {
	if c.inReady {
		panic("logd: Tick between Ready and Advance")
	}
	c.ticks++
	for _, v := range c.vols {
		c.expireStale(v)
	}
	if c.ticks-c.lastCheckpoint >= CheckpointTicks {
		c.Checkpoint()
		c.lastCheckpoint = c.ticks
	}
}

// NewCore returns an empty core.
func NewCore() *Core {
	return &Core{vols: make(map[string]*volume)}
}

// Step handles one decoded kernel request. The reply is queued in the next
// Ready; no reply leaves before the Ready's changes are persisted.
func (c *Core) Step(m *Message) {
	if c.inReady {
		panic("logd: Step between Ready and Advance")
	}
	t := m.Req.Type()
	if t == ReqCtr {
		c.ctr(m)
		return
	}
	v := c.vols[string(m.Req.UUIDBytes())]
	if v == nil || !v.attached {
		switch {
		case t == ReqDtr:
			c.reply(m, 0) // nothing to destroy: DTR is idempotent
			return
		case v != nil && v.restored:
			// A request before any CTR for a log restored from the store:
			// the kernel's table is live (a table load after a reboot starts
			// with CTR), and this is a request it re-sent after its timeout
			// to the restarted daemon. Serve it as after a reconnect. Do not
			// answer -ESRCH here: the kernel's retry after its CTR+RESUME
			// reuses the reply size the -ESRCH reply left, so a retried
			// IN_SYNC would find no room for its answer, count the region
			// as out of sync and write it to one leg only (seen on 6.1).
			c.attachRestored(m, v)
		default:
			// No state for this uuid (or its log was destroyed): -ESRCH
			// makes the kernel re-send CTR and RESUME, then the request.
			c.failSRCH(m)
			return
		}
	}
	switch t {
	case ReqInSync:
		r, ok := c.region(m, v)
		if ok {
			in := v.inSync.get(r)
			if !in {
				v.unseen.set(r, true) // the kernel may now write it unmarked
			}
			c.replyBool(m, in)
		}
	case ReqIsClean:
		r, ok := c.region(m, v)
		if ok {
			c.replyBool(m, !v.marked.get(r))
		}
	case ReqMarkRegion, ReqFlush:
		if !c.checkRegions(m, v) {
			return
		}
		n := len(m.Req.Data) / 8
		for i := range n {
			c.mark(v, RegionAt(m.Req.Data, i))
		}
		// A new mark is made durable before its reply, MARK or FLUSH alike:
		// without integrated_flush the kernel re-sends only the FLUSH after a
		// daemon restart, so a MARK acknowledged but not yet synced would be
		// forgotten and its write would never be replicated (seen in the
		// guest: TestKernelKill9Restart). Re-marks of durably marked regions
		// are not critical and cost no sync.
		c.needSync = true
		c.reply(m, 0)
	case ReqClearRegion:
		if !c.checkRegions(m, v) {
			return
		}
		for i := range len(m.Req.Data) / 8 {
			c.clear(v, RegionAt(m.Req.Data, i))
		}
		c.reply(m, 0)
	case ReqGetRegionSize:
		c.replyU64(m, v.meta.RegionSectors)
	case ReqGetSyncCount:
		c.replyU64(m, v.inSync.ones)
	case ReqGetResyncWork:
		r := v.inSync.nextClear(v.resyncCursor)
		if r >= v.meta.Regions {
			v.resyncCursor = v.meta.Regions
			c.replyPair(m, 0, 0)
			return
		}
		v.resyncCursor = r + 1
		c.replyPair(m, 1, r)
	case ReqSetRegionSync:
		r, in, err := DecodeSetRegionSync(m.Req.Data)
		if err != nil {
			c.fail(m, errnoINVAL, err.Error())
			return
		}
		if r >= v.meta.Regions {
			c.failRange(m, v, r)
			return
		}
		if v.inSync.set(r, in) {
			c.touchChunk(v, &v.dirtyInSync, r/ChunkBits)
			// Critical both ways: after a daemon restart the kernel trusts
			// our in-sync answers, and a region it recovered but we call
			// out of sync would get writes on one leg only.
			c.critical = true
			if !in {
				v.syncHint = min(v.syncHint, r)
			}
		}
		c.regionSynced(v, r, in)
		c.reply(m, 0)
	case ReqIsRemoteRecovering:
		// The kernel holds writes at or above in_sync_hint for up to 250 ms:
		// answer with the first region not in sync, or the count when all are.
		v.syncHint = v.inSync.nextClear(v.syncHint)
		c.replyPair(m, 0, v.syncHint)
	case ReqStatusInfo:
		c.replyText(m, fmt.Sprintf("3 dmsync %d/%d %d", v.inSync.ones, v.meta.Regions, len(v.pending)))
	case ReqStatusTable:
		c.replyText(m, v.meta.Table)
	case ReqPresuspend:
		v.suspended = true
		c.reply(m, 0)
	case ReqPostsuspend:
		v.suspended = true
		c.needSync = true
		c.reply(m, 0)
	case ReqResume:
		c.resume(m, v)
	case ReqDtr:
		c.dtr(m, v)
	default:
		c.fail(m, errnoNOSYS, "unknown request type")
	}
}

// region decodes a single-region payload and range-checks it.
func (c *Core) region(m *Message, v *volume) (uint64, bool) {
	r, err := DecodeRegion(m.Req.Data)
	if err != nil {
		c.fail(m, errnoINVAL, err.Error())
		return 0, false
	}
	if r >= v.meta.Regions {
		c.failRange(m, v, r)
		return 0, false
	}
	return r, true
}

// checkRegions validates a whole region array before anything changes.
func (c *Core) checkRegions(m *Message, v *volume) bool {
	n, err := RegionCount(m.Req.Data)
	if err != nil {
		c.fail(m, errnoINVAL, err.Error())
		return false
	}
	for i := range n {
		if r := RegionAt(m.Req.Data, i); r >= v.meta.Regions {
			c.failRange(m, v, r)
			return false
		}
	}
	return true
}

func (c *Core) failRange(m *Message, v *volume, r uint64) {
	c.fail(m, errnoINVAL, fmt.Sprintf("region %d out of range: the log has %d regions", r, v.meta.Regions))
}

// mark records a MARK of region r: marked, pending with a fresh generation.
func (c *Core) mark(v *volume, r uint64) {
	if v.marked.set(r, true) {
		c.touchChunk(v, &v.dirtyMarked, r/ChunkBits)
	}
	if v.stale.n > 0 {
		v.stale.set(r, false) // written again: a live mark
	}
	_, was := v.pending[r]
	// The write is safe once the region is durably marked and pending; a
	// newer generation need not be durable (Restore skips a whole epoch of
	// generations, so none is ever handed out twice).
	if !v.durMarked.get(r) || !v.durPending.get(r) {
		c.critical = true
	}
	v.meta.NextGen++
	v.pending[r] = v.meta.NextGen
	c.touchPending(v, r)
	if !was {
		c.notify(v)
	}
}

// clear records a CLEAR: the legs agree. The region stays pending.
func (c *Core) clear(v *volume, r uint64) {
	if v.stale.n > 0 {
		v.stale.set(r, false)
	}
	if v.marked.set(r, false) {
		c.touchChunk(v, &v.dirtyMarked, r/ChunkBits)
		if _, ok := v.pending[r]; ok {
			c.notify(v)
		}
	}
}

// resume makes every region still marked (writes that were in flight when
// the machine or the daemon stopped) out of sync, so the kernel resyncs it;
// the kernel's recovery then CLEARs it. Pending entries stay.
func (c *Core) resume(m *Message, v *volume) {
	v.suspended = false
	if v.reconnecting {
		// The kernel lost its daemon, not its state: its region hash and
		// in-sync view stand (and it does not reset its in_sync_hint, so
		// regions made out of sync now would never be recovered, and writes
		// to them would go to one leg only).
		v.reconnecting = false
		c.expireMarksLater(m, v, "kernel reconnected")
		c.reply(m, 0)
		return
	}
	v.resyncCursor = 0
	for r := v.marked.nextSet(0); r < v.meta.Regions; r = v.marked.nextSet(r + 1) {
		if v.inSync.set(r, false) {
			c.touchChunk(v, &v.dirtyInSync, r/ChunkBits)
			v.syncHint = min(v.syncHint, r)
			c.critical = true
		}
	}
	c.needSync = true
	c.reply(m, 0)
}

// expireMarksLater makes the marks still set stale: after a restart of the
// daemon their CLEARs may have been lost, so they expire unless re-MARKed.
func (c *Core) expireMarksLater(m *Message, v *volume, why string) {
	if v.marked.ones == 0 {
		return
	}
	v.stale = newBitset(v.meta.Regions)
	copy(v.stale.words, v.marked.words)
	v.stale.ones = v.marked.ones
	v.staleDeadline = c.ticks + StaleMarkTicks
	c.note(m, NoteInfo, fmt.Sprintf("%s: %d marked regions expire in %d ticks unless written",
		why, v.marked.ones, StaleMarkTicks))
}

// attachRestored serves a log restored from the store that the kernel
// talks to without a CTR: its table stayed loaded while the daemon
// restarted, so the kernel's state stands, as after a reconnect.
func (c *Core) attachRestored(m *Message, v *volume) {
	v.restored = false
	v.attached = true
	if !slices.Contains(v.luids, m.Req.Luid) {
		v.luids = append(v.luids, m.Req.Luid)
	}
	c.expireMarksLater(m, v, "kernel re-sent a request to the restarted daemon")
}

// StaleMarkTicks is how long marks found at a kernel reconnect stay set: a
// write in flight across the daemon's restart has long completed (and been
// CLEARed) by then.
const StaleMarkTicks = 30

// expireStale clears the volume's stale marks once their deadline passed.
func (c *Core) expireStale(v *volume) {
	if v.stale.n == 0 || c.ticks < v.staleDeadline {
		return
	}
	for r := v.stale.nextSet(0); r < v.stale.n; r = v.stale.nextSet(r + 1) {
		c.clear(v, r)
	}
	v.stale = bitset{}
}

func (c *Core) dtr(m *Message, v *volume) {
	if i := slices.Index(v.luids, m.Req.Luid); i >= 0 {
		v.luids = slices.Delete(v.luids, i, i+1)
	}
	if len(v.luids) == 0 {
		v.attached, v.restored = false, false
		c.note(m, NoteInfo, "log destroyed; its state and pending regions stay in the store")
	}
	c.reply(m, 0)
}

// Replies.

func (c *Core) newReply(m *Message, errno int32) *Reply {
	c.rd.Replies = append(c.rd.Replies, Reply{Msg: *m})
	r := &c.rd.Replies[len(c.rd.Replies)-1]
	r.Msg.Req.Data = nil
	r.Msg.Req.Error = -errno
	return r
}

func (c *Core) reply(m *Message, errno int32) { c.newReply(m, errno) }

func (c *Core) fail(m *Message, errno int32, why string) {
	c.newReply(m, errno)
	c.note(m, NoteWarn, why)
}

// failSRCH answers -ESRCH with a zero payload of the size the request's
// answer has. The kernel stores the size of any reply as the room for the
// next one and retries the request with that room after reconnecting: an
// empty -ESRCH reply would make the retried answer not fit (-ENOSPC), and
// an IN_SYNC that fails counts as "not in sync".
func (c *Core) failSRCH(m *Message) {
	r := c.newReply(m, errnoSRCH)
	r.n = uint8(replySize(m.Req.Type()))
	c.note(m, NoteWarn, "no log with this uuid is constructed (the kernel will re-send CTR and RESUME)")
}

// replySize is the size of the fixed-size answer to a request type (0 for
// requests answered without data, and for the text of STATUS_*).
func replySize(t RequestType) int {
	switch t {
	case ReqInSync, ReqIsClean, ReqGetRegionSize, ReqGetSyncCount:
		return 8
	case ReqGetResyncWork, ReqIsRemoteRecovering:
		return 16
	}
	return 0
}

func (c *Core) replyU64(m *Message, v uint64) {
	r := c.newReply(m, 0)
	r.n = uint8(len(AppendU64(r.small[:0], v)))
}

func (c *Core) replyBool(m *Message, b bool) {
	var v uint64
	if b {
		v = 1
	}
	c.replyU64(m, v)
}

func (c *Core) replyPair(m *Message, a int64, b uint64) {
	r := c.newReply(m, 0)
	r.n = uint8(len(AppendPair(r.small[:0], a, b)))
}

func (c *Core) replyText(m *Message, s string) {
	r := c.newReply(m, 0)
	r.text = s + "\x00"
}

func (c *Core) note(m *Message, l NoteLevel, msg string) {
	c.rd.Notes = append(c.rd.Notes, Note{
		Level: l, UUID: string(m.Req.UUIDBytes()), Luid: m.Req.Luid,
		Type: m.Req.Type(), Seq: m.Req.Seq, Msg: msg,
	})
}

func (c *Core) notify(v *volume) {
	if n := len(c.rd.Notify); n > 0 && c.rd.Notify[n-1] == v.uuid {
		return
	}
	c.rd.Notify = append(c.rd.Notify, v.uuid)
}
