//go:build linux

package dmtarget

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUeventListener sends a udev-format message to the udev multicast
// group and reads it back through the listener.
func TestUeventListener(t *testing.T) {
	l, err := listenUevents()
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	defer l.Close()
	if _, err := l.Next(10 * time.Millisecond); !errors.Is(err, errUeventTimeout) {
		t.Fatalf("Next on a quiet socket: %v, want a timeout", err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Skipf("no sender socket: %v", err)
	}
	defer unix.Close(fd)
	msg := udevMessageForTest("ACTION=change\x00DEVPATH=/devices/virtual/block/dm-9\x00DM_NAME=test-vol\x00")
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: ueventGroupUdev}); err != nil {
		t.Skipf("cannot send to the udev group here: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		ev, err := l.Next(100 * time.Millisecond)
		if errors.Is(err, errUeventTimeout) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Env["DM_NAME"] == "test-vol" {
			if ev.Action != "change" || ev.DevPath != "/devices/virtual/block/dm-9" {
				t.Fatalf("event %+v", ev)
			}
			return
		}
	}
	t.Skip("the sent event did not arrive (multicast to the udev group filtered here)")
}
