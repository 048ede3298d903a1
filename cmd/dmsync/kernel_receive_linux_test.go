//go:build linux

package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// TestKernelReceiveImageChecks drives `dmsync receive` against a real
// dmsyncd on real block devices: a mounted device is refused as in use, a
// second path to a device another receive uses is refused, a mistyped
// device never becomes a file under /dev, a device larger than the volume
// is taken with --size, and the daemon serves on after every refusal.
func TestKernelReceiveImageChecks(t *testing.T) {
	g := guesttest.Require(t)
	state := filepath.Join(t.TempDir(), "state")
	g.Run(g.Bin("dmsync"), "init", "--state-dir", state)
	sock := filepath.Join(t.TempDir(), "run", "dmsync.sock")
	g.StartDaemon(guesttest.DaemonOptions{StateDir: state, Args: []string{"--admin-socket", sock, "--listen", "127.0.0.1:17421"}})
	sender := strings.TrimSpace(g.Run(g.Bin("dmsync"), "init", "--state-dir", filepath.Join(t.TempDir(), "a")))
	dmsync := func(args ...string) (string, int) {
		out, err := exec.Command(g.Bin("dmsync"), append([]string{"--socket", sock}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	disk := g.WipeDisk(2)
	g.Run("mkfs.ext4", "-q", disk)
	mnt := t.TempDir()
	g.Run("mount", disk, mnt)
	out, code := dmsync("receive", "data", "--from", sender, "--image", disk, "--size", "64M")
	if code != exitBusy || !strings.Contains(out, "image "+disk+" is in use (mounted") {
		t.Fatalf("receive into a mounted device: exit %d\n%s", code, out)
	}
	g.Run("umount", mnt)
	out, code = dmsync("receive", "data", "--from", sender, "--image", disk, "--size", "64M")
	if code != 0 || !strings.Contains(out, "receiving data (64M) from "+sender+" into "+disk) {
		t.Fatalf("receive into a larger device: exit %d\n%s", code, out)
	}
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(disk, alias); err != nil {
		t.Fatal(err)
	}
	out, code = dmsync("receive", "logs", "--from", sender, "--image", alias, "--size", "64M")
	if code != exitBusy || !strings.Contains(out, "already holds the replica of data") {
		t.Fatalf("a second path to a used device: exit %d\n%s", code, out)
	}
	out, code = dmsync("receive", "logs", "--from", sender, "--image", "/dev/vdz", "--size", "64M")
	if code != exitUsage || !strings.Contains(out, "dmsync makes no files under /dev") {
		t.Fatalf("a mistyped device: exit %d\n%s", code, out)
	}
	if _, err := os.Stat("/dev/vdz"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("/dev/vdz appeared: %v", err)
	}
	out, code = dmsync("status", "--json")
	if code != 0 || !strings.Contains(out, `"volume": "data"`) || !strings.Contains(out, `"state": "empty"`) {
		t.Fatalf("status after the refusals: exit %d\n%s", code, out)
	}
	if out, code = dmsync("receive", "remove", "data"); code != 0 {
		t.Fatalf("receive remove: exit %d\n%s", code, out)
	}
}
