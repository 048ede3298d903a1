package dmtarget

import (
	"fmt"
	"strconv"
	"strings"
)

// Target is one line of a device-mapper table: Length sectors starting at
// Start are mapped by the target Type with Params. In a status reply Params
// holds the target's status text instead.
type Target struct {
	Start  uint64
	Length uint64
	Type   string
	Params string
}

// String formats the target as a dmsetup table line.
func (t Target) String() string {
	if t.Params == "" {
		return fmt.Sprintf("%d %d %s", t.Start, t.Length, t.Type)
	}
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// ParseTable parses dmsetup-style table text: one target a line,
// "<start> <length> <type> <params...>". Blank lines are skipped.
func ParseTable(s string) ([]Target, error) {
	var ts []Target
	for i, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("table line %d %q: want <start> <length> <type> [params]", i+1, line)
		}
		start, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("table line %d: start %q: %w", i+1, f[0], err)
		}
		length, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("table line %d: length %q: %w", i+1, f[1], err)
		}
		ts = append(ts, Target{Start: start, Length: length, Type: f[2], Params: strings.Join(f[3:], " ")})
	}
	return ts, nil
}

// FormatTable formats targets as dmsetup table text, one line each.
func FormatTable(ts []Target) string {
	var b strings.Builder
	for _, t := range ts {
		b.WriteString(t.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// DeviceName is one entry of the device list (DM_LIST_DEVICES).
type DeviceName struct {
	Name    string
	UUID    string // empty when the device has none or the kernel is old
	Major   uint32
	Minor   uint32
	EventNr uint32
}

// Info is the state of one device (DM_DEV_STATUS and the header of most
// replies).
type Info struct {
	Name            string
	UUID            string
	Major, Minor    uint32
	OpenCount       int32
	TargetCount     uint32
	EventNr         uint32
	Suspended       bool
	ReadOnly        bool
	ActivePresent   bool // a live table is loaded
	InactivePresent bool // a table is loaded but not yet resumed
}

// DevT returns the device number as "major:minor", the form tables accept.
func (i Info) DevT() string { return fmt.Sprintf("%d:%d", i.Major, i.Minor) }

func infoFromHeader(h header) Info {
	return Info{
		Name:            h.Name,
		UUID:            h.UUID,
		Major:           devMajor(h.Dev),
		Minor:           devMinor(h.Dev),
		OpenCount:       h.OpenCount,
		TargetCount:     h.TargetCount,
		EventNr:         h.EventNr,
		Suspended:       h.Flags&flagSuspend != 0,
		ReadOnly:        h.Flags&flagReadOnly != 0,
		ActivePresent:   h.Flags&flagActivePresent != 0,
		InactivePresent: h.Flags&flagInactivePresent != 0,
	}
}

// Version is the dm ioctl interface version (major, minor, patchlevel).
type Version [3]uint32

// String formats the version as "4.47.0".
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }
