//go:build !linux

package admin

import (
	"fmt"
	"log/slog"
	"net"
)

// Listen fails: dmsyncd runs on Linux only.
func Listen(path string, log *slog.Logger) (net.Listener, error) {
	return nil, fmt.Errorf("admin socket %s: dmsyncd runs on Linux only", path)
}
