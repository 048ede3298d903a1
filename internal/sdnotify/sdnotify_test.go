package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
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
