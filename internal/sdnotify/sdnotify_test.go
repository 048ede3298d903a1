package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestSilentOutsideSystemd(t *testing.T) {
	if sent, err := Ready("", "x"); sent || err != nil {
		t.Fatalf("sent=%v err=%v", sent, err)
	}
}

func TestReady(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Skipf("no unixgram sockets: %v", err)
	}
	defer l.Close()
	if sent, err := Ready(path, "serving"); !sent || err != nil {
		t.Fatalf("sent=%v err=%v", sent, err)
	}
	buf := make([]byte, 100)
	n, _, err := l.ReadFromUnix(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=serving" {
		t.Fatalf("got %q %v", buf[:n], err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"bogus", "", 0},
		{"0", "", 0},
		{"30000000", "", 30 * time.Second},
		{"30000000", strconv.Itoa(os.Getpid()), 30 * time.Second},
		{"30000000", "1", 0}, // meant for another process
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		if got := WatchdogInterval(); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", tc.usec, tc.pid, got, tc.want)
		}
	}
}
