//go:build linux

package dmtarget

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ueventGroupUdev is the netlink multicast group on which udev re-sends
// events after processing them (so the device node exists by then).
const ueventGroupUdev = 2

// ueventListener receives kobject uevents (NETLINK_KOBJECT_UEVENT).
type ueventListener struct{ fd int }

// listenUevents subscribes to udev's processed uevents.
func listenUevents() (*ueventListener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: ueventGroupUdev}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind uevent socket: %w", err)
	}
	return &ueventListener{fd: fd}, nil
}

// errUeventTimeout is returned by Next when no event arrived in time.
var errUeventTimeout = errors.New("no uevent before the timeout")

// Next returns the next uevent, or errUeventTimeout after timeout.
func (l *ueventListener) Next(timeout time.Duration) (Uevent, error) {
	fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(timeout/time.Millisecond))
	if err != nil && !errors.Is(err, unix.EINTR) {
		return Uevent{}, fmt.Errorf("poll uevent socket: %w", err)
	}
	if n <= 0 {
		return Uevent{}, errUeventTimeout
	}
	buf := make([]byte, 64<<10)
	m, _, err := unix.Recvfrom(l.fd, buf, unix.MSG_DONTWAIT)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) {
			return Uevent{}, errUeventTimeout
		}
		return Uevent{}, fmt.Errorf("receive uevent: %w", err)
	}
	return ParseUevent(buf[:m])
}

// Close closes the socket.
func (l *ueventListener) Close() error { return unix.Close(l.fd) }
