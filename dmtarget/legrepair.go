package dmtarget

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// RepairRequest asks to give a volume with a failed leg a new device:
// Mirror replaces the failed leg of a two-disk volume (the kernel copies
// every region onto it); Data replaces a failed data disk that the operator
// restored from the peer's replica first.
type RepairRequest struct {
	Name   string // the volume (top device or mirror name)
	Mirror string // new second leg
	Data   string // new data disk, holding the restored replica
}

// Repair loads the volume's mirror with the new device. It answers every
// mistake with ErrInvalid (or ErrNotDegraded, ErrNoVolume) and one line
// naming the thing and the fix. The kernel then resyncs; the watcher drops
// the failure record once every region is in sync.
func (l *Legs) Repair(ctx context.Context, req RepairRequest) (LegFailure, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
	}
	switch {
	case req.Mirror == "" && req.Data == "":
		return LegFailure{}, bad("repair %s: give the new device: --mirror DEV (replace a failed leg) or --data DEV (a data disk restored from the peer's replica)", req.Name)
	case req.Mirror != "" && req.Data != "":
		return LegFailure{}, bad("repair %s: give either --mirror or --data, not both (repair the data disk first, then add the mirror)", req.Name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	v, err := l.Builder.Find(ctx, req.Name)
	if err != nil {
		return LegFailure{}, err
	}
	if v.LogType != LogUserspace || v.LogUUID == "" {
		return LegFailure{}, bad("volume %s uses the kernel's %s log, not dmsyncd's: dmsync repairs only mirrors with a userspace log (repair it with dmsetup)", req.Name, v.LogType)
	}
	rec, err := l.Records.Get(v.LogUUID)
	if err != nil {
		return LegFailure{}, err
	}
	if rec == nil {
		return LegFailure{}, l.notDegraded(ctx, v)
	}
	if req.Mirror != "" {
		return l.repairMirror(ctx, v, *rec, req.Mirror)
	}
	return l.repairData(ctx, v, *rec, req.Data)
}

// notDegraded explains why a volume without a failure record cannot be
// repaired.
func (l *Legs) notDegraded(ctx context.Context, v Volume) error {
	_, st, err := l.Builder.DM.Status(ctx, v.Mirror)
	if err == nil && len(st) == 1 && st[0].Type == "mirror" {
		if ms, err := ParseMirrorStatus(st[0].Params); err == nil && !ms.Healthy() {
			return fmt.Errorf("%w: volume %s has a failing leg (health %s) that dmsyncd has not handled yet: wait a few seconds and retry (see dmsync volume status %s)",
				ErrBusy, v.Name, healthChars(ms), v.Name)
		} else if err == nil {
			return fmt.Errorf("%w: %w: volume %s is healthy (legs %s): nothing to repair", ErrInvalid, ErrNotDegraded, v.Name, healthChars(ms))
		}
	}
	return fmt.Errorf("%w: %w: volume %s has no recorded leg failure: nothing to repair", ErrInvalid, ErrNotDegraded, v.Name)
}

func healthChars(ms MirrorStatus) string {
	var b []byte
	for _, l := range ms.Legs {
		b = append(b, l.Health)
	}
	return string(b)
}

// checkNewDev checks a replacement device: it exists, is big enough, and
// nothing uses it.
func (l *Legs) checkNewDev(flag, dev string, sectors uint64) error {
	if !strings.HasPrefix(dev, "/") {
		return fmt.Errorf("%w: %s %s is not a path: give the device as /dev/...", ErrInvalid, flag, dev)
	}
	n, err := l.Builder.Host.DeviceSize(dev)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, dev, err)
	}
	if n < sectors*512 {
		return fmt.Errorf("%w: %s %s is %d bytes, smaller than the volume's %d bytes: use a device of at least that size", ErrInvalid, flag, dev, n, sectors*512)
	}
	if err := l.Builder.Host.CheckUnused(dev); err != nil {
		return fmt.Errorf("%s %s: %w", flag, dev, err)
	}
	return nil
}

// repairMirror loads survivor + DEV with `sync`: logd makes every region
// out of sync on a CTR with sync for a new table (logd/volume.go ctr), so
// the kernel copies every region from leg 0 onto DEV.
func (l *Legs) repairMirror(ctx context.Context, v Volume, rec LegFailure, dev string) (LegFailure, error) {
	switch rec.State {
	case StateResyncing:
		return rec, fmt.Errorf("%w: volume %s is already resyncing onto %s: wait until dmsync volume status %s says healthy", ErrBusy, v.Name, rec.RepairDev, v.Name)
	case StateDataFailed:
		return rec, fmt.Errorf("%w: the data disk of volume %s failed, so there is nothing to copy onto a mirror: restore the peer's replica onto a new disk and run dmsync volume repair %s --data NEWDEV", ErrInvalid, v.Name, v.Name)
	case StateReadErrors:
		return rec, fmt.Errorf("%w: volume %s is a one-disk volume whose data disk fails reads: --mirror would copy those failing reads; copy the data off or restore the peer's replica and use --data", ErrInvalid, v.Name)
	case StateDegraded:
	default:
		return rec, fmt.Errorf("%w: volume %s is %s: nothing to repair with --mirror", ErrInvalid, v.Name, rec.State)
	}
	t, mt, err := l.liveMirror(ctx, v)
	if err != nil {
		return rec, err
	}
	if err := l.checkNewDev("--mirror", dev, t.Length); err != nil {
		return rec, err
	}
	nt := mirrorTarget(t, mt, []MirrorLeg{mt.Legs[0], {Dev: dev}}, "sync")
	if err := l.reload(ctx, v.Mirror, []Target{nt}, SuspendOptions{NoFlush: true, NoLockFS: true}, true); err != nil {
		return rec, fmt.Errorf("repair %s: %w", v.Name, err)
	}
	l.removeSink(ctx, v.Name)
	return l.repairStarted(v, rec, dev, "--mirror")
}

// repairData loads DEV + sink in place of the error table. DEV must hold
// the data: the peer's replica restored onto it (the daemon cannot know
// what was on the failed disk). Every region becomes pending, so the
// replicator checks all of it against the peer.
func (l *Legs) repairData(ctx context.Context, v Volume, rec LegFailure, dev string) (LegFailure, error) {
	switch rec.State {
	case StateDataFailed:
	case StateReadErrors:
		return rec, fmt.Errorf("%w: the data disk of volume %s still serves (some reads fail): --data would replace it under the running volume; unmount it, copy what can be read (or restore the peer's replica) onto a new disk, remove and recreate the volume", ErrInvalid, v.Name)
	default:
		return rec, fmt.Errorf("%w: the data disk of volume %s has not failed (state %s): --data replaces a failed data disk; to replace a failed second leg use --mirror", ErrInvalid, v.Name, rec.State)
	}
	old, err := ParseTable(rec.Table)
	if err != nil || len(old) != 1 || old[0].Type != "mirror" {
		return rec, fmt.Errorf("volume %s: the failure record holds no usable mirror table (%q): recreate the volume from the restored disk", v.Name, rec.Table)
	}
	mt, err := ParseMirrorTable(old[0].Params)
	if err != nil {
		return rec, fmt.Errorf("volume %s: the recorded mirror table: %w", v.Name, err)
	}
	if err := l.checkNewDev("--data", dev, old[0].Length); err != nil {
		return rec, err
	}
	sink, err := l.ensureSink(ctx, v.Name, mt.UUID, old[0].Length)
	if err != nil {
		return rec, err
	}
	nt := mirrorTarget(old[0], mt, []MirrorLeg{{Dev: dev}, {Dev: sink}}, "")
	if err := l.reload(ctx, v.Mirror, []Target{nt}, SuspendOptions{NoFlush: true, NoLockFS: true}, false); err != nil {
		return rec, fmt.Errorf("repair %s: %w", v.Name, err)
	}
	if l.PendAll != nil {
		// What is on DEV came from outside the daemon: compare all of it
		// with the peer (it sends only what differs).
		if err := l.PendAll(mt.UUID); err != nil {
			l.logger().Error("repair --data: could not make every region pending for replication; the replica may differ from the restored disk until those regions are written", "volume", v.Name, "err", err)
		}
	}
	if !rec.OneDisk {
		// Two disks that both failed: the restored disk carries the volume
		// alone; a second leg comes with --mirror.
		rec.State, rec.Survivor, rec.FailedLeg = StateDegraded, dev, 1
		rec.Note = "data restored onto " + dev + "; add a second leg with dmsync volume repair " + v.Name + " --mirror NEWDEV"
		if err := l.Records.Put(rec); err != nil {
			return rec, err
		}
		l.emit(LegEvent{Kind: EventRepairStarted, Volume: v.Name, Mirror: v.Mirror, LogUUID: rec.LogUUID, Dev: dev,
			Message: fmt.Sprintf("volume %s runs on the restored disk %s; still DEGRADED until a second leg is added", v.Name, dev)})
		return rec, nil
	}
	return l.repairStarted(v, rec, dev, "--data")
}

func (l *Legs) repairStarted(v Volume, rec LegFailure, dev, flag string) (LegFailure, error) {
	rec.State, rec.RepairDev, rec.RepairStart = StateResyncing, dev, l.now()
	rec.Note = "repair " + flag + " " + dev + " loaded"
	if err := l.Records.Put(rec); err != nil {
		return rec, fmt.Errorf("repair of %s loaded, but its record was not saved (status will not show the resync): %w", v.Name, err)
	}
	l.emit(LegEvent{Kind: EventRepairStarted, Volume: v.Name, Mirror: v.Mirror, LogUUID: rec.LogUUID, Dev: dev,
		Message: fmt.Sprintf("repair of volume %s: %s replaces %s; the kernel resyncs it", v.Name, dev, rec.FailedName())})
	return rec, nil
}

// liveMirror returns the live mirror target of a volume and its table.
func (l *Legs) liveMirror(ctx context.Context, v Volume) (Target, MirrorTable, error) {
	_, table, err := l.Builder.DM.Table(ctx, v.Mirror)
	if err != nil {
		return Target{}, MirrorTable{}, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	if len(table) != 1 || table[0].Type != "mirror" {
		return Target{}, MirrorTable{}, fmt.Errorf("%w: %s is not a single mirror target (dmsync repairs only those): repair it with dmsetup", ErrInvalid, v.Mirror)
	}
	mt, err := ParseMirrorTable(table[0].Params)
	if err != nil {
		return Target{}, MirrorTable{}, err
	}
	if len(mt.Legs) != 2 {
		return Target{}, MirrorTable{}, fmt.Errorf("%w: mirror %s has %d legs: dmsync repairs two-leg mirrors only", ErrInvalid, v.Mirror, len(mt.Legs))
	}
	return table[0], mt, nil
}

// blockDevPath finds /dev/NAME for a device number via sysfs ("" if none).
func blockDevPath(dev string) string {
	b, err := os.ReadFile("/sys/dev/block/" + dev + "/uevent")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if n, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			return "/dev/" + n
		}
	}
	return ""
}
