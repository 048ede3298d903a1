//go:build !linux

package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
)

// Listen fails: dmsyncd runs on Linux only.
func Listen(path string, log *slog.Logger) (net.Listener, error) {
	return nil, fmt.Errorf("admin socket %s: dmsyncd runs on Linux only", path)
}

// ErrSocketInUse is wrapped by ListenUnix when a live process answers on
// the socket.
var ErrSocketInUse = errors.New("admin socket in use")

// ListenUnix fails: dmsyncd runs on Linux only.
func ListenUnix(path string) (*net.UnixListener, error) {
	return nil, fmt.Errorf("admin socket %s: dmsyncd runs on Linux only", path)
}

// RootOnly returns ln unchanged (no peer credentials off Linux).
func RootOnly(ln net.Listener, _ *slog.Logger) net.Listener { return ln }
