package dmtarget

import (
	"encoding/binary"
	"testing"
)

func udevMessage(props string) []byte { return udevMessageForTest(props) }

func udevMessageForTest(props string) []byte {
	h := make([]byte, 40)
	copy(h, "libudev\x00")
	binary.BigEndian.PutUint32(h[8:], udevMagic)
	binary.NativeEndian.PutUint32(h[12:], 40)
	binary.NativeEndian.PutUint32(h[16:], 40)
	binary.NativeEndian.PutUint32(h[20:], uint32(len(props)))
	return append(h, props...)
}

func TestParseUevent(t *testing.T) {
	k := []byte("change@/devices/virtual/block/dm-0\x00ACTION=change\x00DEVPATH=/devices/virtual/block/dm-0\x00SUBSYSTEM=block\x00DM_NAME=vol0\x00MAJOR=253\x00MINOR=0\x00")
	ev, err := ParseUevent(k)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != "change" || ev.DevPath != "/devices/virtual/block/dm-0" || ev.Env["DM_NAME"] != "vol0" || ev.Env["MINOR"] != "0" {
		t.Fatalf("kernel form: %+v", ev)
	}
	u := udevMessage("ACTION=add\x00DEVPATH=/devices/virtual/block/dm-1\x00DEVNAME=/dev/dm-1\x00DEVLINKS=/dev/mapper/vol1 /dev/disk/by-id/dm-name-vol1\x00")
	ev, err = ParseUevent(u)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != "add" || ev.DevPath != "/devices/virtual/block/dm-1" || ev.Env["DEVLINKS"] != "/dev/mapper/vol1 /dev/disk/by-id/dm-name-vol1" {
		t.Fatalf("udev form: %+v", ev)
	}
	bad := udevMessage("ACTION=add\x00")
	binary.BigEndian.PutUint32(bad[8:], 1)
	for name, b := range map[string][]byte{
		"no @":          []byte("change\x00A=b\x00"),
		"empty":         {},
		"bad property":  []byte("add@/x\x00NOEQUALS\x00"),
		"udev short":    []byte("libudev\x00\x00"),
		"udev magic":    bad,
		"udev overflow": udevMessage("ACTION=add")[:44],
		"no action":     udevMessage("DEVPATH=/x\x00"),
	} {
		if _, err := ParseUevent(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func FuzzParseUevent(f *testing.F) {
	f.Add([]byte("add@/devices/virtual/block/dm-0\x00ACTION=add\x00DM_NAME=v\x00"))
	f.Add(udevMessage("ACTION=change\x00DEVPATH=/d\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseUevent(b)
		if err == nil && ev.Action == "" {
			t.Fatalf("accepted uevent without action: %q", b)
		}
	})
}
