// Package sdnotify tells systemd about the service's state (sd_notify):
// READY=1 once the service can do its job, STATUS= lines, STOPPING=1,
// WATCHDOG=1 keep-alives. It is
// silent outside systemd (NOTIFY_SOCKET unset).
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Socket returns the notification socket named by NOTIFY_SOCKET, or "".
func Socket() string { return os.Getenv("NOTIFY_SOCKET") }

// Send sends state lines (e.g. "READY=1") to socket; an empty socket is a
// no-op that reports false.
func Send(socket string, state ...string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	addr := socket
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify to %s: %w", socket, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(state, "\n"))); err != nil {
		return false, fmt.Errorf("sd_notify to %s: %w", socket, err)
	}
	return true, nil
}

// Ready reports READY=1 with a status line.
func Ready(socket, status string) (bool, error) {
	return Send(socket, "READY=1", "STATUS="+status)
}

// Stopping reports STOPPING=1.
func Stopping(socket string) (bool, error) { return Send(socket, "STOPPING=1") }

// WatchdogInterval returns systemd's watchdog interval for this process
// (WATCHDOG_USEC, if WATCHDOG_PID is unset or names this process), or 0.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec == 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// Watchdog sends WATCHDOG=1.
func Watchdog(socket string) (bool, error) { return Send(socket, "WATCHDOG=1") }
