package dmtarget

import (
	"errors"
	"fmt"
	"time"
)

// Failed legs: what the daemon does when a mirror leg fails, as LVM's
// dmeventd does for its mirrors. With handle_errors the kernel holds a write
// that failed on a leg until the table is reloaded (kernel-facts.md "Leg 0
// failing writes"): something must react to the dm event, or writers hang.
//
//	two disks, one leg fails   reload with the survivor as leg 0 and a sink
//	                           as leg 1 (noflush suspend: the held writes are
//	                           re-queued and complete on the new table);
//	                           DEGRADED until `dmsync volume repair --mirror`
//	one disk, leg 0 fails      (or both legs of two disks) reload the mirror
//	                           to an `error` table (a flushing suspend fails
//	                           the held writes with EIO); the data is on the
//	                           peer's replica; `dmsync volume repair --data`
//	                           after restoring it
//
// The failure is kept in a LegFailure record that survives a restart of the
// daemon (RecordStore), so status names the failed device afterwards too.

// FailureState is where a volume with a failed leg stands.
type FailureState string

// Failure states.
const (
	// StateDegraded: two disks, one failed; the volume runs on the
	// survivor with a sink as leg 1.
	StateDegraded FailureState = "degraded"
	// StateDataFailed: the only disk holding the data failed (one-disk
	// mode, or both legs); the volume fails all I/O with EIO.
	StateDataFailed FailureState = "data-failed"
	// StateResyncing: a repair loaded the new leg; the kernel copies every
	// region onto it. Done when the kernel reports every region in sync.
	StateResyncing FailureState = "resyncing"
	// StateReadErrors: one disk, leg 0 failed a read (the read returned
	// EIO, nothing hangs); the volume keeps running. Writes still work.
	StateReadErrors FailureState = "read-errors"
)

// LegFailure is the durable record of a volume whose leg failed.
type LegFailure struct {
	Volume  string       `json:"volume"`   // top device (/dev/mapper/Volume)
	Mirror  string       `json:"mirror"`   // dm name of the mirror
	LogUUID string       `json:"log_uuid"` // the userspace log uuid (the record's key)
	OneDisk bool         `json:"one_disk"`
	State   FailureState `json:"state"`
	// FailedLeg is the leg index in the table that failed; FailedDev its
	// device as the table named it (major:minor) and FailedPath a
	// /dev path for it when one was found.
	FailedLeg  int       `json:"failed_leg"`
	FailedDev  string    `json:"failed_dev"`
	FailedPath string    `json:"failed_path,omitempty"`
	Health     string    `json:"health"` // the leg's health character (D, R, S, F, U)
	At         time.Time `json:"at"`
	// Survivor is the leg the volume runs on (two disks).
	Survivor string `json:"survivor,omitempty"`
	// NeedsFullResync: a replacement leg gets every region (it is a new
	// device; nothing on it can be trusted).
	NeedsFullResync bool `json:"needs_full_resync"`
	// OutOfSync is the number of regions not in sync when the leg failed.
	// If the failed leg was leg 0, the survivor may hold stale data there.
	OutOfSync uint64 `json:"out_of_sync"`
	// Table is the mirror's table line before the failure.
	Table string `json:"table"`
	// RepairDev is the new leg a repair loaded (StateResyncing).
	RepairDev   string    `json:"repair_dev,omitempty"`
	RepairStart time.Time `json:"repair_start,omitzero"`
	// Note is the last action's outcome, for status.
	Note string `json:"note,omitempty"`
}

// FailedName is the failed device as an operator knows it: its path with
// its device number, or the device number alone.
func (f LegFailure) FailedName() string {
	if f.FailedPath != "" && f.FailedPath != f.FailedDev {
		return fmt.Sprintf("%s (%s)", f.FailedPath, f.FailedDev)
	}
	return f.FailedDev
}

// Summary is a one-line account of the failure and the way back.
func (f LegFailure) Summary() string {
	at := f.At.UTC().Format(time.RFC3339)
	switch f.State {
	case StateDegraded:
		s := fmt.Sprintf("DEGRADED: leg %d %s failed (%s) at %s; running on %s alone: replace it with `dmsync volume repair %s --mirror NEWDEV` (a full resync)",
			f.FailedLeg, f.FailedName(), healthWord(f.Health), at, f.Survivor, f.Volume)
		if f.OutOfSync > 0 && f.FailedLeg == 0 {
			s += fmt.Sprintf("; %d regions were not yet in sync: their content on the survivor may be stale (check with fsck, restore from the peer's replica if needed)", f.OutOfSync)
		}
		return s
	case StateDataFailed:
		return fmt.Sprintf("DATA DISK FAILED: %s failed (%s) at %s; all I/O fails with EIO. The way back is the peer's replica: restore it onto a new disk, then `dmsync volume repair %s --data NEWDEV`",
			f.FailedName(), healthWord(f.Health), at, f.Volume)
	case StateResyncing:
		if f.OneDisk {
			return fmt.Sprintf("DEGRADED, repairing: %s (restored data) replaces %s (failed at %s); healthy once the kernel reports every region in sync", f.RepairDev, f.FailedName(), at)
		}
		return fmt.Sprintf("DEGRADED, resyncing: %s replaces %s (failed at %s); the kernel copies every region onto it", f.RepairDev, f.FailedName(), at)
	case StateReadErrors:
		if !f.OneDisk {
			return fmt.Sprintf("DEGRADED: both legs failed reads at %s (those reads returned EIO; writes go on): copy the data off or restore from the peer's replica", at)
		}
		return fmt.Sprintf("DEGRADED: data disk %s failed a read at %s (those reads returned EIO); the disk is failing: copy the data off or restore from the peer's replica", f.FailedName(), at)
	}
	return fmt.Sprintf("leg %s: %s", f.FailedName(), f.State)
}

func healthWord(h string) string {
	switch h {
	case "D":
		return "write failed"
	case "R":
		return "read failed"
	case "S":
		return "resync failed"
	case "F":
		return "flush failed"
	case "U":
		return "failed"
	}
	return "health " + h
}

// LegAction is what the watcher does about a mirror's status.
type LegAction int

// Actions.
const (
	ActNone       LegAction = iota
	ActDegrade              // two disks: reload with the failed leg replaced by a sink
	ActFailData             // the data is gone: reload to an error table
	ActReadErrors           // reads failed on every leg that holds data: record it, keep running
	ActRepairDone           // the repaired leg is in sync: drop the record
)

func (a LegAction) String() string {
	return [...]string{"none", "degrade", "fail-data", "read-errors", "repair-done"}[a]
}

// LegDecision is an action and the leg it concerns.
type LegDecision struct {
	Action LegAction
	Leg    int // the failed leg (ActDegrade, ActFailData, ActReadErrors)
}

// writeFailed reports whether a leg health means the leg must go: writes
// to it failed or hang (D, F, U) or a resync into it failed (S). A read
// failure (R) alone does not hold I/O.
func writeFailed(h byte) bool {
	return h == LegWriteFailed || h == LegFlushFailed || h == LegUnclassified || h == LegSyncFailed
}

func legFailed(h byte) bool { return h != LegAlive }

// DecideLegAction decides what to do about a mirror's status. oneDisk: leg
// 1 is a sink (a failure of the sink itself is ignored: it never holds
// data). rec is the volume's failure record, nil if none.
func DecideLegAction(oneDisk bool, ms MirrorStatus, rec *LegFailure) LegDecision {
	if len(ms.Legs) != 2 {
		return LegDecision{}
	}
	l0, l1 := ms.Legs[0].Health, ms.Legs[1].Health
	if rec != nil && rec.State == StateDataFailed {
		return LegDecision{} // an error table has no mirror status; nothing left to do
	}
	if oneDisk {
		switch {
		case writeFailed(l0):
			return LegDecision{Action: ActFailData, Leg: 0}
		case l0 == LegReadFailed && (rec == nil || rec.State != StateReadErrors):
			return LegDecision{Action: ActReadErrors, Leg: 0}
		}
		if rec != nil && rec.State == StateResyncing && ms.Regions > 0 && ms.InSync == ms.Regions && l0 == LegAlive {
			return LegDecision{Action: ActRepairDone}
		}
		return LegDecision{}
	}
	if rec != nil && (rec.State == StateDegraded || rec.State == StateResyncing && writeFailed(l0)) {
		// Degraded: leg 1 is the sink now, only the survivor (leg 0)
		// matters. Resyncing: the new leg is not in sync yet, so it cannot
		// take over from a failing survivor.
		if writeFailed(l0) {
			return LegDecision{Action: ActFailData, Leg: 0}
		}
		return LegDecision{}
	}
	switch {
	case legFailed(l0) && legFailed(l1):
		// Both legs failed. A leg that only failed reads still takes writes.
		switch {
		case !writeFailed(l0) && writeFailed(l1):
			return LegDecision{Action: ActDegrade, Leg: 1}
		case writeFailed(l0) && !writeFailed(l1):
			return LegDecision{Action: ActDegrade, Leg: 0}
		case !writeFailed(l0) && !writeFailed(l1):
			// Both failed reads (that read returned EIO); writes work.
			if rec == nil || rec.State != StateReadErrors {
				return LegDecision{Action: ActReadErrors, Leg: 0}
			}
			return LegDecision{}
		}
		return LegDecision{Action: ActFailData, Leg: 0}
	case legFailed(l0):
		return LegDecision{Action: ActDegrade, Leg: 0}
	case legFailed(l1):
		return LegDecision{Action: ActDegrade, Leg: 1}
	}
	if rec != nil && rec.State == StateResyncing && ms.Regions > 0 && ms.InSync == ms.Regions {
		return LegDecision{Action: ActRepairDone}
	}
	return LegDecision{}
}

// ErrNotDegraded: a repair was asked for a volume whose legs are healthy.
var ErrNotDegraded = errors.New("volume is not degraded")
