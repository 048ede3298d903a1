package dmtarget

import (
	"context"
	"errors"
	"fmt"
)

// LogVolume is a live dm device whose table has a mirror target with a
// userspace dirty log: a volume the daemon serves, whoever created it
// (dmsync or plain dmsetup).
type LogVolume struct {
	Name   string // dm device name of the mirror
	DMUUID string // dm device uuid (may be empty)
	Major  uint32
	Minor  uint32
	Start  uint64 // the mirror target's first sector in the device
	Length uint64 // the mirror target's length in sectors
	Table  MirrorTable
}

// LogUUID returns the userspace log's uuid (the key the kernel sends in
// every dm-log-userspace request).
func (v LogVolume) LogUUID() string { return v.Table.UUID }

// ListUserspaceLogVolumes lists every dm device whose live table has a
// mirror target with a userspace log, with the log's uuid and legs. A
// device removed while listing is skipped.
func ListUserspaceLogVolumes(ctx context.Context, dm DM) ([]LogVolume, error) {
	names, err := dm.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list userspace-log volumes: %w", err)
	}
	var out []LogVolume
	for _, n := range names {
		info, table, err := dm.Table(ctx, n.Name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list userspace-log volumes: %w", err)
		}
		for _, t := range table {
			if t.Type != "mirror" {
				continue
			}
			mt, err := ParseMirrorTable(t.Params)
			if err != nil || mt.LogType != "userspace" {
				continue
			}
			out = append(out, LogVolume{
				Name: n.Name, DMUUID: info.UUID, Major: info.Major, Minor: info.Minor,
				Start: t.Start, Length: t.Length, Table: mt,
			})
		}
	}
	return out, nil
}
