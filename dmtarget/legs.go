package dmtarget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// LegEventKind says what happened to a volume's legs.
type LegEventKind string

// Event kinds.
const (
	EventDegraded      LegEventKind = "degraded"       // a leg failed; the volume runs on the other
	EventDataFailed    LegEventKind = "data-failed"    // the data disk failed; I/O fails with EIO
	EventReadErrors    LegEventKind = "read-errors"    // the data disk failed reads
	EventRepairStarted LegEventKind = "repair-started" // a new leg was loaded and resyncs
	EventRepaired      LegEventKind = "repaired"       // the new leg is in sync
	EventActionFailed  LegEventKind = "action-failed"  // the daemon could not reconfigure the volume
)

// LegEvent is one thing that happened to a volume's legs, for the
// operator surface (Legs.OnEvent).
type LegEvent struct {
	Time    time.Time
	Kind    LegEventKind
	Volume  string // top device name
	Mirror  string // mirror dm name
	LogUUID string
	Leg     int    // the leg concerned
	Dev     string // its device
	Health  string // its health character, if it failed
	Message string // one line for the operator
}

// Failure reports whether the event is a failure (logged at error level).
func (e LegEvent) Failure() bool {
	return e.Kind == EventDegraded || e.Kind == EventDataFailed || e.Kind == EventReadErrors || e.Kind == EventActionFailed
}

// Legs watches the dm events of every mirror with a userspace log, acts
// on failed legs (see legfailure.go) and repairs volumes. Its zero value is
// not usable: set Builder and Records.
type Legs struct {
	Builder *Builder
	Records RecordStore
	Logger  *slog.Logger // nil discards
	// OnEvent, if set, receives every event (synchronously: keep it fast).
	OnEvent func(LegEvent)
	// PendAll, if set, makes every region of a log pending for
	// replication (logd.Server.PendAll). Repair --data calls it: the new
	// data disk was filled from outside (the peer's replica, the operator
	// says), so the replicator must compare all of it with the peer.
	// Writes the kernel makes to out-of-sync regions during a resync reach
	// no MARK; logd makes those regions pending itself when their recovery
	// ends (logd/unseen.go), so a degrade or a --mirror repair needs none.
	PendAll func(logUUID string) error
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rescan is how often Run looks for new mirrors and re-checks each
	// mirror without an event (default 5s).
	Rescan time.Duration

	mu sync.Mutex // serialises reconfigurations (watcher and Repair)
	// outOfSync is each log's count of regions out of sync when its legs
	// were last seen healthy: at a failure the kernel has already made
	// the failed write's region out of sync, so the status then says more
	// than what the survivor may lack.
	outOfSync map[string]uint64
}

func (l *Legs) logger() *slog.Logger {
	if l.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Logger
}

func (l *Legs) now() time.Time {
	if l.Now == nil {
		return time.Now()
	}
	return l.Now()
}

func (l *Legs) rescan() time.Duration {
	if l.Rescan <= 0 {
		return 5 * time.Second
	}
	return l.Rescan
}

func (l *Legs) emit(ev LegEvent) {
	ev.Time = l.now()
	attrs := []any{"volume", ev.Volume, "mirror", ev.Mirror, "log_uuid", ev.LogUUID, "event", string(ev.Kind)}
	if ev.Dev != "" {
		attrs = append(attrs, "leg", ev.Leg, "dev", ev.Dev)
	}
	if ev.Health != "" {
		attrs = append(attrs, "health", ev.Health)
	}
	if ev.Failure() {
		l.logger().Error(ev.Message, attrs...)
	} else {
		l.logger().Info(ev.Message, attrs...)
	}
	if l.OnEvent != nil {
		l.OnEvent(ev)
	}
}

// Failure returns the failure record of a log uuid (nil if none). It
// implements FailureSource for Builder.Status.
func (l *Legs) Failure(logUUID string) (*LegFailure, error) { return l.Records.Get(logUUID) }

// Run watches every mirror with a userspace log until ctx is done: one
// goroutine per mirror waits for its dm events (DM_DEV_WAIT) and checks its
// status after each, and at least every Rescan.
func (l *Legs) Run(ctx context.Context) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		watching = map[string]bool{}
		lastErr  string
	)
	defer wg.Wait()
	t := time.NewTicker(l.rescan())
	defer t.Stop()
	for {
		vols, err := ListUserspaceLogVolumes(ctx, l.Builder.DM)
		if err != nil && ctx.Err() == nil && err.Error() != lastErr {
			l.logger().Warn("leg watcher: list mirrors", "err", err)
		}
		if err != nil {
			lastErr = err.Error()
		} else {
			lastErr = ""
		}
		for _, v := range vols {
			mu.Lock()
			if !watching[v.Name] {
				watching[v.Name] = true
				wg.Add(1)
				go func(name string) {
					defer wg.Done()
					l.watch(ctx, name)
					mu.Lock()
					delete(watching, name)
					mu.Unlock()
				}(v.Name)
			}
			mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// watch follows one mirror until it is gone, is no longer a mirror with a
// userspace log, or ctx is done.
func (l *Legs) watch(ctx context.Context, name string) {
	log := l.logger().With("mirror", name)
	info, st, err := l.Builder.DM.Status(ctx, name)
	for {
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrNotFound) {
			return
		}
		if err == nil {
			if !l.Check(ctx, name, st) {
				return
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			log.Warn("leg watcher: status", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			info, st, err = l.Builder.DM.Status(ctx, name)
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, l.rescan())
		var winfo Info
		winfo, st, err = l.Builder.DM.Wait(wctx, name, info.EventNr)
		cancel()
		if err == nil {
			info = winfo
		} else if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// No event: look again anyway (a missed event costs one Rescan).
			info, st, err = l.Builder.DM.Status(ctx, name)
		}
	}
}

// Check decides and acts on one status of a mirror (st as DM.Status or
// DM.Wait return it). It reports whether the mirror is still one to watch.
func (l *Legs) Check(ctx context.Context, name string, st []Target) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, table, err := l.Builder.DM.Table(ctx, name)
	if err != nil {
		return !errors.Is(err, ErrNotFound)
	}
	if len(table) != 1 || table[0].Type != "mirror" || len(st) != 1 || st[0].Type != "mirror" {
		return false
	}
	mt, err := ParseMirrorTable(table[0].Params)
	if err != nil || mt.LogType != LogUserspace || len(mt.Legs) != 2 {
		return false
	}
	ms, err := ParseMirrorStatus(st[0].Params)
	if err != nil {
		l.logger().Warn("leg watcher: mirror status", "mirror", name, "err", err)
		return true
	}
	rec, err := l.Records.Get(mt.UUID)
	if err != nil {
		l.logger().Error("leg watcher: failure record", "mirror", name, "err", err)
	}
	if ms.Healthy() || healthChars(ms) == "AA" {
		if l.outOfSync == nil {
			l.outOfSync = map[string]uint64{}
		}
		l.outOfSync[mt.UUID] = ms.Regions - ms.InSync
	}
	sink := l.isSink(ctx, mt.Legs[1].Dev)
	if rec != nil && rec.State == StateDegraded && !sink {
		rec = nil // recorded, but the reload did not happen: do it again
	}
	oneDisk := sink && (rec == nil || rec.OneDisk || rec.State == StateDataFailed)
	d := DecideLegAction(oneDisk, ms, rec)
	if d.Action == ActNone {
		return true
	}
	v := l.volumeOf(ctx, name)
	l.logger().Debug("leg watcher: action", "mirror", name, "action", d.Action.String(), "leg", d.Leg, "status", st[0].Params)
	var aerr error
	switch d.Action {
	case ActDegrade:
		aerr = l.degrade(ctx, v, table[0], mt, ms, d.Leg)
	case ActFailData:
		aerr = l.failData(ctx, v, table[0], mt, ms, d.Leg, oneDisk, rec)
		if aerr == nil {
			return false
		}
	case ActReadErrors:
		aerr = l.readErrors(v, table[0], mt, ms, oneDisk)
	case ActRepairDone:
		aerr = l.repairDone(v, rec)
	}
	if aerr != nil {
		l.emit(LegEvent{Kind: EventActionFailed, Volume: v.Name, Mirror: name, LogUUID: mt.UUID, Leg: d.Leg,
			Dev: mt.Legs[d.Leg].Dev, Health: string(ms.Legs[d.Leg].Health),
			Message: fmt.Sprintf("%s of volume %s failed: %v", d.Action, v.Name, aerr)})
	}
	return true
}

// volumeOf returns the volume whose mirror is name (or a bare one).
func (l *Legs) volumeOf(ctx context.Context, mirror string) Volume {
	if vols, err := l.Builder.List(ctx); err == nil {
		for _, v := range vols {
			if v.Mirror == mirror {
				return v
			}
		}
	}
	return Volume{Name: mirror, Mirror: mirror}
}

// isSink reports whether dev (major:minor) is a sink dmsync made.
func (l *Legs) isSink(ctx context.Context, dev string) bool {
	name := l.nameOf(ctx, dev)
	if name == "" {
		return false
	}
	info, err := l.Builder.DM.Info(ctx, name)
	return err == nil && strings.HasPrefix(info.UUID, uuidPrefixSink)
}

// nameOf returns the dm name of device major:minor, "" if it is no dm
// device.
func (l *Legs) nameOf(ctx context.Context, dev string) string {
	names, err := l.Builder.DM.List(ctx)
	if err != nil {
		return ""
	}
	for _, n := range names {
		if fmt.Sprintf("%d:%d", n.Major, n.Minor) == dev {
			return n.Name
		}
	}
	return ""
}

// devPath names a leg for the operator: /dev/mapper/NAME for a dm device,
// else the /dev node with that number if one is found.
func (l *Legs) devPath(ctx context.Context, dev string) string {
	if strings.HasPrefix(dev, "/") {
		return dev
	}
	if n := l.nameOf(ctx, dev); n != "" {
		return "/dev/mapper/" + n
	}
	return blockDevPath(dev)
}

// mirrorTarget rebuilds a mirror target with other legs. sync: "" keeps
// the in-sync state the log has ("sync"/"nosync" words dropped), "sync"
// makes the log call every region out of sync (logd: a CTR with sync on a
// new table fills the in-sync bits with 0), so the kernel copies leg 0 onto
// the others.
func mirrorTarget(t Target, mt MirrorTable, legs []MirrorLeg, sync string) Target {
	var inner []string
	for _, a := range mt.InnerLogArgs {
		if a != "sync" && a != "nosync" {
			inner = append(inner, a)
		}
	}
	if sync != "" {
		inner = append(inner, sync)
	}
	log := []string{mt.UUID}
	if mt.IntegratedFlush {
		log = append(log, "integrated_flush")
	}
	log = append(log, mt.InnerLogType)
	log = append(log, inner...)
	var b strings.Builder
	fmt.Fprintf(&b, "userspace %d %s %d", len(log), strings.Join(log, " "), len(legs))
	for _, lg := range legs {
		fmt.Fprintf(&b, " %s %d", lg.Dev, lg.Offset)
	}
	feats := mt.Features
	if !containsWord(feats, "handle_errors") {
		feats = append(append([]string(nil), feats...), "handle_errors")
	}
	fmt.Fprintf(&b, " %d %s", len(feats), strings.Join(feats, " "))
	return Target{Start: t.Start, Length: t.Length, Type: "mirror", Params: b.String()}
}

func containsWord(ws []string, w string) bool {
	for _, x := range ws {
		if x == w {
			return true
		}
	}
	return false
}

// reload makes table live on name: load into the inactive slot, suspend
// (as o says), resume. With suspendFirst the old table is suspended before
// the new one is loaded: a load whose log CTR says `sync` makes the log call
// every region out of sync at once, and a still running old table would
// "recover" regions into its legs and mark them in sync before the new leg
// ever saw them. A device is never left suspended by a failed step.
func (l *Legs) reload(ctx context.Context, name string, table []Target, o SuspendOptions, suspendFirst bool) error {
	dm := l.Builder.DM
	ctx = context.WithoutCancel(ctx) // half a reload is worse than a late one
	if !suspendFirst {
		if err := dm.Load(ctx, name, table); err != nil {
			return fmt.Errorf("load new table into %s: %w", name, err)
		}
	}
	if err := dm.SuspendWith(ctx, name, o); err != nil {
		return fmt.Errorf("suspend %s: %w", name, err)
	}
	if suspendFirst {
		if err := dm.Load(ctx, name, table); err != nil {
			if _, rerr := dm.Resume(ctx, name); rerr != nil {
				return fmt.Errorf("load new table into %s: %w; and resuming the old table failed, the device is suspended (dmsetup resume %s): %v", name, err, name, rerr)
			}
			return fmt.Errorf("load new table into %s (the old table is live again): %w", name, err)
		}
	}
	if _, err := dm.Resume(ctx, name); err != nil {
		return fmt.Errorf("resume %s with the new table: %w", name, err)
	}
	return nil
}

// ensureSink returns the device number of VOLUME-sink (made with its
// VOLUME-sinkerr if missing), length n sectors.
func (l *Legs) ensureSink(ctx context.Context, volume, logUUID string, n uint64) (string, error) {
	dm := l.Builder.DM
	se, s := sinkErrName(volume), sinkName(volume)
	if info, err := dm.Info(ctx, s); err == nil {
		return info.DevT(), nil
	}
	mk := func(name, uuid string, t Target) (Info, error) {
		info, err := dm.Info(ctx, name)
		if err == nil && info.ActivePresent {
			return info, nil
		}
		if errors.Is(err, ErrNotFound) {
			if _, err := dm.Create(ctx, name, uuid); err != nil {
				return Info{}, err
			}
		} else if err != nil {
			return Info{}, err
		}
		if err := dm.Load(ctx, name, []Target{t}); err != nil {
			return Info{}, err
		}
		return dm.Resume(ctx, name)
	}
	ei, err := mk(se, uuidPrefixSinkErr+logUUID, Target{0, n, "error", ""})
	if err != nil {
		return "", fmt.Errorf("make sink %s: %w", se, err)
	}
	si, err := mk(s, uuidPrefixSink+logUUID, Target{0, n, "flakey", ei.DevT() + " 0 0 1 1 drop_writes"})
	if err != nil {
		return "", fmt.Errorf("make sink %s: %w", s, err)
	}
	return si.DevT(), nil
}

// removeSink removes VOLUME-sink and VOLUME-sinkerr once no table uses
// them (after a repair replaced the sink).
func (l *Legs) removeSink(ctx context.Context, volume string) {
	for _, n := range []string{sinkName(volume), sinkErrName(volume)} {
		if err := l.Builder.DM.Remove(ctx, n); err != nil && !errors.Is(err, ErrNotFound) {
			l.logger().Warn("remove the unused sink", "device", n, "err", err)
		}
	}
}

// degrade replaces the failed leg of a two-disk mirror by a sink, with the
// survivor as leg 0 (reads come from it). The writes the kernel holds are
// re-queued by the noflush suspend and complete on the new table.
func (l *Legs) degrade(ctx context.Context, v Volume, t Target, mt MirrorTable, ms MirrorStatus, leg int) error {
	survivor := mt.Legs[1-leg]
	rec := LegFailure{
		Volume: v.Name, Mirror: v.Mirror, LogUUID: mt.UUID, State: StateDegraded,
		FailedLeg: leg, FailedDev: mt.Legs[leg].Dev, FailedPath: l.devPath(ctx, mt.Legs[leg].Dev),
		Health: string(ms.Legs[leg].Health), At: l.now(), Survivor: l.devPath(ctx, survivor.Dev),
		NeedsFullResync: true, OutOfSync: ms.Regions - ms.InSync, Table: t.String(),
	}
	if n, ok := l.outOfSync[mt.UUID]; ok {
		rec.OutOfSync = n
	}
	if old, _ := l.Records.Get(mt.UUID); old != nil && old.State == StateResyncing && leg == 1 {
		rec.Table = old.Table // the table before the first failure stays the reference
	}
	rec.Note = "reconfiguring: replacing the failed leg with a sink"
	if err := l.Records.Put(rec); err != nil {
		l.logger().Error("leg failure record not saved; reconfiguring anyway", "volume", v.Name, "err", err)
	}
	sink, err := l.ensureSink(ctx, v.Name, mt.UUID, t.Length)
	if err != nil {
		return err
	}
	nt := mirrorTarget(t, mt, []MirrorLeg{survivor, {Dev: sink}}, "")
	if err := l.reload(ctx, v.Mirror, []Target{nt}, SuspendOptions{NoFlush: true, NoLockFS: true}, false); err != nil {
		return err
	}
	rec.Note = "running on " + rec.Survivor + " with a sink as leg 1"
	if err := l.Records.Put(rec); err != nil {
		l.logger().Error("leg failure record not saved", "volume", v.Name, "err", err)
	}
	l.emit(LegEvent{Kind: EventDegraded, Volume: v.Name, Mirror: v.Mirror, LogUUID: mt.UUID, Leg: leg,
		Dev: rec.FailedName(), Health: rec.Health, Message: "mirror leg failed: " + rec.Summary()})
	return nil
}

// failData makes the volume fail every I/O with EIO: the data disk is
// gone. The error table is loaded first; the flushing suspend then fails
// the writes the mirror holds with EIO (dm-raid1 hold_bio), and the resume
// makes the error table live.
func (l *Legs) failData(ctx context.Context, v Volume, t Target, mt MirrorTable, ms MirrorStatus, leg int, oneDisk bool, old *LegFailure) error {
	rec := LegFailure{
		Volume: v.Name, Mirror: v.Mirror, LogUUID: mt.UUID, OneDisk: oneDisk && (old == nil || old.OneDisk), State: StateDataFailed,
		FailedLeg: leg, FailedDev: mt.Legs[leg].Dev, FailedPath: l.devPath(ctx, mt.Legs[leg].Dev),
		Health: string(ms.Legs[leg].Health), At: l.now(), NeedsFullResync: true, Table: t.String(),
	}
	if old != nil && old.Table != "" {
		rec.Table = old.Table
		rec.OneDisk = old.OneDisk
	}
	if !oneDisk && old == nil {
		rec.Note = "both legs failed"
	}
	if err := l.Records.Put(rec); err != nil {
		l.logger().Error("leg failure record not saved; failing the volume anyway", "volume", v.Name, "err", err)
	}
	et := Target{Start: t.Start, Length: t.Length, Type: "error"}
	if err := l.reload(ctx, v.Mirror, []Target{et}, SuspendOptions{NoLockFS: true}, false); err != nil {
		return err
	}
	l.emit(LegEvent{Kind: EventDataFailed, Volume: v.Name, Mirror: v.Mirror, LogUUID: mt.UUID, Leg: leg,
		Dev: rec.FailedName(), Health: rec.Health, Message: "data disk failed: " + rec.Summary()})
	return nil
}

func (l *Legs) readErrors(v Volume, t Target, mt MirrorTable, ms MirrorStatus, oneDisk bool) error {
	rec := LegFailure{
		Volume: v.Name, Mirror: v.Mirror, LogUUID: mt.UUID, OneDisk: oneDisk, State: StateReadErrors,
		FailedLeg: 0, FailedDev: mt.Legs[0].Dev, FailedPath: l.devPath(context.Background(), mt.Legs[0].Dev),
		Health: string(ms.Legs[0].Health), At: l.now(), Table: t.String(),
	}
	err := l.Records.Put(rec)
	l.emit(LegEvent{Kind: EventReadErrors, Volume: v.Name, Mirror: v.Mirror, LogUUID: mt.UUID, Leg: 0,
		Dev: rec.FailedName(), Health: rec.Health, Message: "reads failed: " + rec.Summary()})
	return err
}

// repairDone drops the record of a repaired volume: its new leg is in sync.
func (l *Legs) repairDone(v Volume, rec *LegFailure) error {
	if err := l.Records.Delete(rec.LogUUID); err != nil {
		return err
	}
	l.emit(LegEvent{Kind: EventRepaired, Volume: v.Name, Mirror: v.Mirror, LogUUID: rec.LogUUID, Dev: rec.RepairDev,
		Message: fmt.Sprintf("volume %s repaired: %s is in sync (it replaced %s, failed %s)",
			v.Name, rec.RepairDev, rec.FailedName(), rec.At.UTC().Format(time.RFC3339))})
	return nil
}
