//go:build linux

package admin

import (
	"net"
	"os"
	"path/filepath"
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
