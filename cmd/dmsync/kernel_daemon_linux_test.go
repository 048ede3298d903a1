//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/guesttest"
)

// startDmsyncd runs dmsyncd (admin API on sock) until the test ends and
// waits for READY=1.
func startDmsyncd(t *testing.T, g *guesttest.G, sock string) {
	t.Helper()
	g.StartDaemon(guesttest.DaemonOptions{Args: []string{"--admin-socket", sock}})
}

// TestKernelCLIWithDaemon drives the dmsync binary against dmsyncd's own
// admin socket, with dmsyncd serving the log: the whole path an operator
// uses.
func TestKernelCLIWithDaemon(t *testing.T) {
	g := guesttest.Require(t)
	sock := filepath.Join(t.TempDir(), "run", "dmsync.sock")
	startDmsyncd(t, g, sock)
	ctl, err := dmtarget.Open(dmtarget.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	b := &dmtarget.Builder{DM: ctl, Host: dmtarget.SystemHost{}}
	t.Cleanup(func() { _ = b.Remove(context.Background(), "cli") })

	key := filepath.Join(t.TempDir(), "key")
	k := make([]byte, 64)
	rand.Read(k)
	os.WriteFile(key, k, 0o600)
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
	disk := g.Disk(3)
	if out, code := dmsync("volume", "create", "cli", "--data", disk, "--crypt", "plain", "--key-file", key); code != 0 || !strings.Contains(out, "created volume cli") {
		t.Fatalf("create: exit %d\n%s", code, out)
	}
	if out, code := dmsync("volume", "create", "cli2", "--data", disk); code != exitUsage || !strings.Contains(out, "in use") {
		t.Fatalf("create on a used disk: exit %d\n%s", code, out)
	}
	out, code := dmsync("volume", "list")
	if code != 0 || !strings.Contains(out, "cli-mirror") || !strings.Contains(out, "plain") || !strings.Contains(out, "one-disk") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	out, code = dmsync("volume", "status", "cli")
	t.Logf("status:\n%s", out)
	if code != 0 || !strings.Contains(out, "healthy") || !strings.Contains(out, "replication:") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	out, code = dmsync("volume", "status", "cli", "--json")
	if code != 0 || !strings.Contains(out, `"state": "healthy"`) || !strings.Contains(out, `"version": 1`) {
		t.Fatalf("volume status --json: exit %d\n%s", code, out)
	}
	out, code = dmsync("status", "--json")
	if code != 0 || !strings.Contains(out, `"name": "cli"`) || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("status --json: exit %d\n%s", code, out)
	}
	g.Run("mkfs.ext4", "-q", "/dev/mapper/cli")
	if out, code = dmsync("volume", "remove", "cli"); code != 0 || !strings.Contains(out, "removed volume cli (cli, cli-mirror, cli-sink, cli-sinkerr)") {
		t.Fatalf("remove: exit %d\n%s", code, out)
	}
	if out, code = dmsync("volume", "status", "cli"); code != exitNoVolume {
		t.Fatalf("status after remove: exit %d\n%s", code, out)
	}
	raw, err2 := exec.Command(g.Bin("dmsync"), "--socket", "/run/nothing/dmsync.sock", "volume", "list").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err2, &ee) || ee.ExitCode() != exitNoDaemon || !strings.Contains(string(raw), "systemctl start dmsyncd") {
		t.Fatalf("without a daemon: %v\n%s", err2, raw)
	}
}
