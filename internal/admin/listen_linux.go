//go:build linux

package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Listen listens on the admin socket: its directory is created 0700, a
// stale socket is replaced, the socket is 0600, and connections from a
// peer that is not root (SO_PEERCRED) are closed at once.
func Listen(path string, log *slog.Logger) (net.Listener, error) {
	ln, err := ListenUnix(path)
	if err != nil {
		return nil, err
	}
	return RootOnly(ln, log), nil
}

// ErrSocketInUse is wrapped by ListenUnix when a live process answers on
// the socket.
var ErrSocketInUse = errors.New("admin socket in use")

// ListenUnix binds the admin socket (directory 0700, socket 0600). A
// socket file something still answers on is left alone: the error wraps
// ErrSocketInUse and names the process (SO_PEERCRED). Only a socket
// nothing answers on is removed as stale.
func ListenUnix(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket directory %s: %w", filepath.Dir(path), err)
	}
	if c, err := net.DialTimeout("unix", path, 2*time.Second); err == nil {
		holder := "unknown pid"
		if pid, perr := peerPID(c); perr == nil {
			holder = fmt.Sprintf("pid %d", pid)
		}
		c.Close()
		return nil, fmt.Errorf("%s: %w by %s (another dmsyncd?): stop it, or give this one its own --admin-socket", path, ErrSocketInUse, holder)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale admin socket %s: %w", path, err)
	}
	old := unix.Umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod admin socket %s: %w", path, err)
	}
	return ln, nil
}

// RootOnly wraps ln so that Accept closes, at once, every connection from
// a peer that is not root.
func RootOnly(ln net.Listener, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &rootOnly{Listener: ln, log: log}
}

type rootOnly struct {
	net.Listener
	log *slog.Logger
}

// Accept returns the next connection from a root peer.
func (l *rootOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && uid == 0 {
			return c, nil
		}
		l.log.Warn("admin connection refused: peer is not root", "uid", uid, "err", err)
		c.Close()
	}
}

func peerUID(c net.Conn) (uint32, error) {
	cred, err := peerCred(c)
	if err != nil {
		return 0, err
	}
	return cred.Uid, nil
}

func peerPID(c net.Conn) (int32, error) {
	cred, err := peerCred(c)
	if err != nil {
		return 0, err
	}
	return cred.Pid, nil
}

func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
