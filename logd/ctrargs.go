package logd

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits on a log's geometry. Region sizes are in 512-byte sectors, as
// device-mapper counts them.
const (
	MinRegionSectors = 8       // 4 KiB: one page
	MaxRegionSectors = 1 << 31 // the kernel keeps region size in a u32
	MaxRegions       = 1 << 26 // 8 MiB per bitmap in memory
)

// ErrBadTable is wrapped by every CTR argument error.
var ErrBadTable = errors.New("bad userspace log table")

// CtrArgs are the log arguments the kernel sends with CTR:
// "<sectors> core <region_size> [sync|nosync] [integrated_flush]" or
// "<sectors> disk <device> <region_size> [sync|nosync] ...". The kernel strips
// the UUID and normally integrated_flush; both are accepted here.
type CtrArgs struct {
	Sectors       uint64 // device length in sectors
	LogType       string // "core" or "disk"
	Device        string // disk log device (ignored: state lives in Pebble)
	RegionSectors uint64 // region size in sectors
	Sync          SyncMode
	Integrated    bool   // integrated_flush: marks ride in the FLUSH payload
	Table         string // the arguments after <sectors>, for STATUS_TABLE
}

// SyncMode is the sync/nosync argument.
type SyncMode uint8

// Sync modes: default resyncs a new log fully and keeps a known one; sync
// forces a full resync; nosync trusts the legs of a new log to be equal.
const (
	SyncDefault SyncMode = iota
	SyncForce
	SyncNone
)

// Regions is the region count: ceil(Sectors / RegionSectors).
func (a *CtrArgs) Regions() uint64 {
	return (a.Sectors + a.RegionSectors - 1) / a.RegionSectors
}

// ParseCtrArgs parses and validates CTR data. The error names the bad
// argument and what would be accepted.
func ParseCtrArgs(data []byte) (CtrArgs, error) {
	var a CtrArgs
	s := string(data)
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i] // the kernel adds a NUL when it re-sends CTR
	}
	f := strings.Fields(s)
	if len(f) < 3 {
		return a, fmt.Errorf("%w: %q: want \"<sectors> core <region_size> [sync|nosync]\"", ErrBadTable, s)
	}
	n, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil || n == 0 {
		return a, fmt.Errorf("%w: device length %q is not a positive sector count", ErrBadTable, f[0])
	}
	a.Sectors = n
	a.Table = strings.Join(f[1:], " ")
	a.LogType = f[1]
	rest := f[2:]
	switch a.LogType {
	case "core":
	case "disk":
		a.Device = rest[0]
		rest = rest[1:]
	default:
		return a, fmt.Errorf("%w: log type %q: want core or disk", ErrBadTable, a.LogType)
	}
	if len(rest) == 0 {
		return a, fmt.Errorf("%w: %s log without a region size", ErrBadTable, a.LogType)
	}
	rs, err := strconv.ParseUint(rest[0], 10, 64)
	if err != nil {
		return a, fmt.Errorf("%w: region size %q is not a sector count", ErrBadTable, rest[0])
	}
	if rs < MinRegionSectors || rs > MaxRegionSectors || rs&(rs-1) != 0 {
		return a, fmt.Errorf("%w: region size %d sectors: want a power of two from %d (4 KiB) to %d sectors",
			ErrBadTable, rs, MinRegionSectors, uint64(MaxRegionSectors))
	}
	a.RegionSectors = rs
	for _, arg := range rest[1:] {
		switch arg {
		case "sync", "nosync":
			if a.Sync != SyncDefault {
				return a, fmt.Errorf("%w: more than one of sync/nosync", ErrBadTable)
			}
			a.Sync = SyncForce
			if arg == "nosync" {
				a.Sync = SyncNone
			}
		case "integrated_flush":
			a.Integrated = true
		default:
			return a, fmt.Errorf("%w: unknown log argument %q: want sync, nosync or integrated_flush", ErrBadTable, arg)
		}
	}
	if c := a.Regions(); c > MaxRegions {
		return a, fmt.Errorf("%w: %d regions of %d sectors exceed the limit of %d: use a larger region size",
			ErrBadTable, c, rs, MaxRegions)
	}
	return a, nil
}
