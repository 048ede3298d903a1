//go:build linux

package dmtarget

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestLayoutMatchesUnix checks this package's offsets against the struct
// layouts golang.org/x/sys/unix generated from the kernel headers.
func TestLayoutMatchesUnix(t *testing.T) {
	var d unix.DmIoctl
	var s unix.DmTargetSpec
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof dm_ioctl", headerSize, unix.SizeofDmIoctl},
		{"data_size", offDataSize, unsafe.Offsetof(d.Data_size)},
		{"data_start", offDataStart, unsafe.Offsetof(d.Data_start)},
		{"target_count", offTargetCount, unsafe.Offsetof(d.Target_count)},
		{"open_count", offOpenCount, unsafe.Offsetof(d.Open_count)},
		{"flags", offFlags, unsafe.Offsetof(d.Flags)},
		{"event_nr", offEventNr, unsafe.Offsetof(d.Event_nr)},
		{"dev", offDev, unsafe.Offsetof(d.Dev)},
		{"name", offName, unsafe.Offsetof(d.Name)},
		{"uuid", offUUID, unsafe.Offsetof(d.Uuid)},
		{"sizeof dm_target_spec", specSize, unix.SizeofDmTargetSpec},
		{"spec next", 20, unsafe.Offsetof(s.Next)},
		{"spec target_type", 24, unsafe.Offsetof(s.Target_type)},
	} {
		if c.got != c.want {
			t.Errorf("%s: this package uses %d, unix has %d", c.name, c.got, c.want)
		}
	}
	for _, f := range []struct {
		name      string
		got, want uint32
	}{
		{"STATUS_TABLE", flagStatusTable, unix.DM_STATUS_TABLE_FLAG},
		{"SUSPEND", flagSuspend, unix.DM_SUSPEND_FLAG},
		{"BUFFER_FULL", flagBufferFull, unix.DM_BUFFER_FULL_FLAG},
		{"DATA_OUT", flagDataOut, unix.DM_DATA_OUT_FLAG},
		{"ACTIVE_PRESENT", flagActivePresent, unix.DM_ACTIVE_PRESENT_FLAG},
		{"INACTIVE_PRESENT", flagInactivePresent, unix.DM_INACTIVE_PRESENT_FLAG},
		{"NAME_LIST_HAS_UUID", nameListFlagHasUUID, unix.DM_NAME_LIST_FLAG_HAS_UUID},
	} {
		if f.got != f.want {
			t.Errorf("flag %s: %#x, unix has %#x", f.name, f.got, f.want)
		}
	}
	if dev := devEncode(253, 1<<12+7); dev != unix.Mkdev(253, 1<<12+7) {
		t.Errorf("devEncode = %#x, unix.Mkdev = %#x", dev, unix.Mkdev(253, 1<<12+7))
	}
}
