//go:build linux

package admin

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenSocketIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	sock := filepath.Join(dir, "dmsync.sock")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sock, nil, 0o644); err != nil { // stale leftover
		t.Fatal(err)
	}
	ln, err := Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a 0600 socket", st.Mode())
	}
	// This process's own uid decides whether it is accepted.
	go func() {
		c, err := net.Dial("unix", sock)
		if err == nil {
			defer c.Close()
			c.Write([]byte("x"))
		}
	}()
	if os.Getuid() != 0 {
		t.Skip("not root: cannot check that a root peer is accepted")
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestListenRefusesLiveSocket: a second daemon with the same admin socket
// does not remove a socket that answers; it names the process instead. A
// socket nothing answers on is replaced.
func TestListenRefusesLiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	first, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := first.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, err = Listen(sock, nil)
	if !errors.Is(err, ErrSocketInUse) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second listener: %v", err)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("live socket removed: %v", err)
	}
	// A stale socket file (its listener gone without unlinking) is replaced.
	first.SetUnlinkOnClose(false)
	first.Close()
	ln, err := Listen(sock, nil)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()
}
