//go:build linux

package logd

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// connector is the NETLINK_CONNECTOR socket the kernel's dm-log-userspace
// module talks to. It is non-blocking and registered with Go's poller, so
// Close unblocks Receive.
type connector struct {
	f    *os.File
	bufs [][]byte
	nbuf int
}

const (
	recvBufSize  = 8192    // one request: headers + at most a page of data
	maxBatch     = 256     // datagrams handed to the core in one Ready
	socketRcvBuf = 4 << 20 // absorb bursts while a sync is in progress
)

// DialConnector opens the connector socket and joins the dm-log-userspace
// group (CN_IDX_DM). It needs CAP_NET_ADMIN (root) and must run in the
// initial network namespace.
func DialConnector() (Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("open netlink connector socket: %w", err)
	}
	fail := func(what string, err error) (Conn, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s on the netlink connector socket: %w (needs root, initial network namespace)", what, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (CnIdxDM - 1)}); err != nil {
		return fail("bind to CN_IDX_DM", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, CnIdxDM); err != nil {
		return fail("join CN_IDX_DM", err)
	}
	// Best effort: a larger receive buffer (FORCE needs CAP_NET_ADMIN).
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketRcvBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketRcvBuf)
	}
	c := &connector{f: os.NewFile(uintptr(fd), "netlink-connector")}
	return c, nil
}

// Receive blocks for one datagram from the kernel, then drains what is
// queued. Datagrams from other senders (nl_pid != 0) are dropped.
func (c *connector) Receive(ctx context.Context) ([][]byte, error) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	c.nbuf = 0
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for c.nbuf < maxBatch {
			if c.nbuf == len(c.bufs) {
				c.bufs = append(c.bufs, make([]byte, recvBufSize))
			}
			buf := c.bufs[c.nbuf][:recvBufSize]
			n, from, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				return c.nbuf > 0 // false: wait for readiness
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.ENOBUFS) {
				// Overrun: the kernel times out and re-sends what we lost.
				continue
			}
			if err != nil {
				rerr = err
				return true
			}
			if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
				continue // only the kernel may talk to the log
			}
			c.bufs[c.nbuf] = buf[:n]
			c.nbuf++
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("receive from netlink connector: %w", err)
	}
	return c.bufs[:c.nbuf], nil
}

// Send sends one reply to the kernel (nl_pid 0).
func (c *connector) Send(msg []byte) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return !errors.Is(serr, unix.EAGAIN)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("send to netlink connector: %w", err)
	}
	return nil
}

// Close closes the socket and unblocks Receive.
func (c *connector) Close() error { return c.f.Close() }
