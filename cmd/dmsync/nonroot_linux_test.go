//go:build linux

package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/internal/admin"
)

// TestNonRoot runs the dmsync binary as nobody against a root daemon's
// socket: it is told to run as root (exit 6), never that dmsyncd is not
// running, whether the socket's directory or the socket itself is closed
// to it.
func TestNonRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a command as nobody")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "dmsync")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "dmsync.sock")
	ln, err := admin.Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	go g.Serve(ln)
	defer g.Stop()
	asNobody := func() (string, int) {
		out, err := exec.Command(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", bin, "--socket", sock, "status").CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("as nobody: %v\n%s", err, out)
		}
		return string(out), ee.ExitCode()
	}
	want := "dmsync: permission denied on " + sock + ": run as root\n"
	// The socket's directory is 0700 (admin.Listen makes it so).
	if out, code := asNobody(); code != exitPermission || out != want {
		t.Errorf("closed directory: exit %d\n%q\nwant %q", code, out, want)
	}
	// The directory open, the socket 0600.
	if err := os.Chmod(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, code := asNobody(); code != exitPermission || out != want || strings.Contains(out, "not running") {
		t.Errorf("closed socket: exit %d\n%q\nwant %q", code, out, want)
	}
}
