package dmtarget

import (
	"fmt"
	"strconv"
	"strings"
)

// Leg health characters in a mirror status (drivers/md/dm-raid1.c).
const (
	LegAlive        = 'A' // no failure
	LegWriteFailed  = 'D' // a write failed (the leg is dead)
	LegSyncFailed   = 'S' // resynchronisation into the leg failed
	LegReadFailed   = 'R' // a read failed
	LegUnclassified = 'U' // a failure of another kind
	LegFlushFailed  = 'F' // a flush failed
)

// MirrorLeg is one leg of a mirror: its device and, in a status, its health.
type MirrorLeg struct {
	Dev    string // "253:1" in status and table replies, a path when loaded by path
	Offset uint64 // sectors; tables only
	Health byte   // one of the Leg* characters; status only
}

// MirrorStatus is a decoded `mirror` target status line:
//
//	<#legs> <dev>... <in-sync>/<regions> 1 <health chars> <log status>
//
// where the log status is "<#args> <type> <args...>" (core: "1 core",
// disk: "3 disk 253:3 A", userspace: whatever the log daemon reports), or
// "userspace 1 COM_FAILURE" when the userspace log daemon did not answer.
type MirrorStatus struct {
	Legs    []MirrorLeg
	InSync  uint64 // regions in sync
	Regions uint64 // total regions
	LogType string
	LogArgs []string
	// LogHealth is the log's health: "A" or "D" for a disk log, the
	// daemon's last one-letter argument for a userspace log,
	// "COM_FAILURE" when the daemon did not answer, "" when unknown.
	LogHealth string
	// ReplicationPending is the number of regions dmsyncd has not yet
	// replicated to the peer, when the log is dmsyncd's (its STATUS_INFO
	// reply is "3 dmsync <in-sync>/<regions> <pending>").
	ReplicationPending    uint64
	HasReplicationPending bool
}

// SyncRatio returns InSync/Regions (1 for an empty mirror).
func (s MirrorStatus) SyncRatio() float64 {
	if s.Regions == 0 {
		return 1
	}
	return float64(s.InSync) / float64(s.Regions)
}

// Healthy reports whether every leg is alive and the log is not failing.
func (s MirrorStatus) Healthy() bool {
	for _, l := range s.Legs {
		if l.Health != LegAlive {
			return false
		}
	}
	return s.LogHealth == "" || s.LogHealth == "A"
}

// ParseMirrorStatus decodes a mirror target's status text.
func ParseMirrorStatus(s string) (MirrorStatus, error) {
	var st MirrorStatus
	f := strings.Fields(s)
	if len(f) < 1 {
		return st, fmt.Errorf("mirror status %q: empty", s)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 || n > 32 {
		return st, fmt.Errorf("mirror status %q: leg count %q: want 1..32", s, f[0])
	}
	if len(f) < 1+n+3 {
		return st, fmt.Errorf("mirror status %q: %d fields, want at least %d for %d legs", s, len(f), 1+n+3, n)
	}
	devs := f[1 : 1+n]
	rest := f[1+n:]
	a, b, ok := strings.Cut(rest[0], "/")
	if !ok {
		return st, fmt.Errorf("mirror status %q: sync count %q: want <in-sync>/<regions>", s, rest[0])
	}
	if st.InSync, err = strconv.ParseUint(a, 10, 64); err != nil {
		return st, fmt.Errorf("mirror status %q: in-sync count %q: %w", s, a, err)
	}
	if st.Regions, err = strconv.ParseUint(b, 10, 64); err != nil {
		return st, fmt.Errorf("mirror status %q: region count %q: %w", s, b, err)
	}
	if st.InSync > st.Regions {
		return st, fmt.Errorf("mirror status %q: %d of %d regions in sync", s, st.InSync, st.Regions)
	}
	if rest[1] != "1" {
		return st, fmt.Errorf("mirror status %q: health field count %q: want 1", s, rest[1])
	}
	health := rest[2]
	if len(health) != n {
		return st, fmt.Errorf("mirror status %q: health %q has %d characters for %d legs", s, health, len(health), n)
	}
	for i, d := range devs {
		c := health[i]
		if !strings.ContainsRune("ADSRUF", rune(c)) {
			return st, fmt.Errorf("mirror status %q: leg %d health %q: want one of ADSRUF", s, i, c)
		}
		st.Legs = append(st.Legs, MirrorLeg{Dev: d, Health: c})
	}
	log := rest[3:]
	switch {
	case len(log) == 0:
	case len(log) == 3 && log[1] == "1" && log[2] == "COM_FAILURE":
		st.LogType, st.LogArgs, st.LogHealth = log[0], log[2:], "COM_FAILURE"
	default:
		argc, err := strconv.Atoi(log[0])
		if err != nil || argc < 1 || argc != len(log)-1 {
			return st, fmt.Errorf("mirror status %q: log status %q: want <#args> <type> <args...>", s, strings.Join(log, " "))
		}
		st.LogType, st.LogArgs = log[1], log[2:]
		if k := len(st.LogArgs); k > 0 && len(st.LogArgs[k-1]) == 1 && st.LogArgs[k-1][0] >= 'A' && st.LogArgs[k-1][0] <= 'Z' {
			st.LogHealth = st.LogArgs[k-1]
		}
		// dmsyncd's STATUS_INFO: "3 dmsync <in-sync>/<regions> <pending>".
		if st.LogType == "dmsync" && len(st.LogArgs) == 2 {
			if p, err := strconv.ParseUint(st.LogArgs[1], 10, 64); err == nil {
				st.ReplicationPending, st.HasReplicationPending = p, true
			}
		}
	}
	return st, nil
}

// MirrorTable is a decoded `mirror` target table line:
//
//	<log type> <#log args> <log args...> <#legs> (<dev> <offset>)... [<#features> <features...>]
//
// For a userspace log the log args are <uuid> [integrated_flush] <inner log
// type> <inner args...>.
type MirrorTable struct {
	LogType         string   // core, disk, userspace
	LogArgs         []string // all log args as given
	UUID            string   // userspace log only
	IntegratedFlush bool     // userspace log only
	InnerLogType    string   // userspace log only: core or disk
	InnerLogArgs    []string // userspace log only, e.g. [1024 nosync]
	RegionSectors   uint64   // region size in sectors, 0 if not found
	Legs            []MirrorLeg
	Features        []string // e.g. [handle_errors]
}

// ParseMirrorTable decodes a mirror target's table parameters. For a
// userspace log it does not rely on the log argument count (kernels report
// it without the uuid and integrated_flush words); it finds the leg list as
// the only split that accounts for every remaining word.
func ParseMirrorTable(s string) (MirrorTable, error) {
	var t MirrorTable
	f := strings.Fields(s)
	if len(f) < 2 {
		return t, fmt.Errorf("mirror table %q: want <log type> <#log args> ...", s)
	}
	t.LogType = f[0]
	argc, err := strconv.Atoi(f[1])
	if err != nil || argc < 0 || argc > len(f)-2 {
		return t, fmt.Errorf("mirror table %q: log argument count %q", s, f[1])
	}
	if t.LogType != "userspace" {
		t.LogArgs = f[2 : 2+argc]
		legs, feats, ok := parseLegs(f[2+argc:])
		if !ok {
			return t, fmt.Errorf("mirror table %q: cannot decode the legs after %d log args", s, argc)
		}
		t.Legs, t.Features = legs, feats
		args := t.LogArgs
		if t.LogType == "disk" && len(args) > 0 {
			args = args[1:]
		}
		if len(args) > 0 {
			t.RegionSectors, _ = strconv.ParseUint(args[0], 10, 64)
		}
		return t, nil
	}
	i := 2
	if i >= len(f) {
		return t, fmt.Errorf("mirror table %q: userspace log without uuid", s)
	}
	t.UUID = f[i]
	i++
	if i < len(f) && f[i] == "integrated_flush" {
		t.IntegratedFlush = true
		i++
	}
	if i >= len(f) {
		return t, fmt.Errorf("mirror table %q: userspace log without inner log type", s)
	}
	t.InnerLogType = f[i]
	i++
	for k := i; k < len(f); k++ {
		if legs, feats, ok := parseLegs(f[k:]); ok {
			t.InnerLogArgs = f[i:k]
			t.LogArgs = f[2:k]
			t.Legs, t.Features = legs, feats
			args := t.InnerLogArgs
			if t.InnerLogType == "disk" && len(args) > 0 {
				args = args[1:]
			}
			if len(args) > 0 {
				t.RegionSectors, _ = strconv.ParseUint(args[0], 10, 64)
			}
			return t, nil
		}
	}
	return t, fmt.Errorf("mirror table %q: cannot find the leg list", s)
}

// parseLegs decodes "<#legs> (<dev> <offset>)... [<#features> <features...>]"
// and reports whether it accounts for every word.
func parseLegs(f []string) ([]MirrorLeg, []string, bool) {
	if len(f) < 1 {
		return nil, nil, false
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 || n > 32 || len(f) < 1+2*n {
		return nil, nil, false
	}
	legs := make([]MirrorLeg, n)
	for i := range legs {
		off, err := strconv.ParseUint(f[2+2*i], 10, 64)
		if err != nil {
			return nil, nil, false
		}
		legs[i] = MirrorLeg{Dev: f[1+2*i], Offset: off}
	}
	rest := f[1+2*n:]
	if len(rest) == 0 {
		return legs, nil, true
	}
	k, err := strconv.Atoi(rest[0])
	if err != nil || k != len(rest)-1 {
		return nil, nil, false
	}
	return legs, rest[1:], true
}
