package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
)

func (e *env) run(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"--socket", e.sock}, args...), &out, &errb)
	if err != nil {
		errb.WriteString("dmsync: " + err.Error() + "\n")
	}
	return out.String(), errb.String(), exitCode(err)
}

func TestVolumeCommands(t *testing.T) {
	e := newEnv(t)
	out, stderr, code := e.run("volume", "create", "v", "--data", "/dev/vdb")
	if code != 0 || !strings.Contains(out, "created volume v: /dev/mapper/v (one-disk, userspace log") {
		t.Fatalf("create: code %d out %q err %q", code, out, stderr)
	}
	if _, stderr, code = e.run("volume", "create", "--data", "/dev/vdc", "v"); code != exitUsage || !strings.Contains(stderr, "already exists") {
		t.Fatalf("create w: code %d err %q", code, stderr)
	}
	out, _, code = e.run("volume", "list")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "one-disk") || !strings.Contains(out, "1G") {
		t.Fatalf("list: %d %q", code, out)
	}
	out, _, code = e.run("volume", "status", "v")
	for _, w := range []string{"state:       healthy", "256/256 regions in sync (100.0%), 0 pending", "A (alive)", "region 4M"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("status lacks %q (code %d):\n%s", w, code, out)
		}
	}
	e.dm.Update("v", true, func(d *dmtargettest.Device) { d.Status = []string{"2 254:16 253:1 256/256 1 AA 3 dmsync 256/256 7"} })
	out, _, _ = e.run("volume", "status", "v")
	if !strings.Contains(out, "replication: 7 regions not yet replicated") || !strings.Contains(out, "healthy") {
		t.Errorf("dmsyncd's pending count not shown:\n%s", out)
	}
	e.dm.Update("v", true, func(d *dmtargettest.Device) { d.Status = []string{"2 254:16 253:1 128/256 1 RR 1 core"} })
	out, stderr, code = e.run("volume", "status", "v")
	if code != exitFailure || !strings.Contains(stderr, "volume v is degraded-leg") {
		t.Errorf("status of a degraded volume: exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(out, "DEGRADED") || !strings.Contains(out, "R (read-failed)") || !strings.Contains(out, "128 pending") {
		t.Errorf("failed legs not shown:\n%s", out)
	}
	e.dm.Update("v", false, func(d *dmtargettest.Device) { d.OpenCount = 1 })
	if _, stderr, code = e.run("volume", "remove", "v"); code != exitBusy || !strings.Contains(stderr, "unmount") {
		t.Fatalf("remove while open: %d %q", code, stderr)
	}
	e.dm.Update("v", false, func(d *dmtargettest.Device) { d.OpenCount = 0 })
	out, stderr, code = e.run("volume", "remove", "v")
	if code != 0 || !strings.Contains(out, "removed volume v (v, v-sink, v-sinkerr)") {
		t.Fatalf("remove: %d %q %q", code, out, stderr)
	}
	if _, stderr, code = e.run("volume", "remove", "v"); code != exitNoVolume || !strings.Contains(stderr, "no volume named v") {
		t.Fatalf("remove again: %d %q", code, stderr)
	}
}

func TestCreateErrors(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"volume", "create", "v", "--data", "/dev/small"}, exitUsage, "smaller than"},
		{[]string{"volume", "create", "v", "--data", "/dev/vdb", "--region-size", "3M"}, exitUsage, "not a power of two"},
		{[]string{"volume", "create", "v", "--data", "/dev/vdb", "--region-size", "lots"}, exitUsage, "--region-size"},
		{[]string{"volume", "create", "v"}, exitUsage, "--data DEVICE is required"},
		{[]string{"volume", "create", "--data", "/dev/vdb"}, exitUsage, "volume create: want NAME, got none; see `dmsync volume create --help`"},
		{[]string{"volume", "frobnicate"}, exitUsage, `volume: unknown command "frobnicate" (create, list, remove, repair, status)`},
		{[]string{"nope"}, exitUsage, "unknown command"},
		{[]string{"volume", "create", "v", "--data", "/dev/vdb", "--crypt", "luks2", "--key-file", "/missing"}, exitUsage, "key file /missing does not exist"},
	} {
		_, stderr, code := e.run(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: code %d (want %d), stderr %q (want %q)", tc.args, code, tc.code, stderr, tc.want)
		}
	}
	if len(e.dm.Devices()) != 0 {
		t.Fatalf("failed creates left %v", e.dm.Devices())
	}
}

func TestNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	for _, args := range [][]string{{"volume", "list"}, {"volume", "status", "v"}, {"volume", "remove", "v"}, {"volume", "create", "v", "--data", "/dev/vdb"}} {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"--socket", sock}, args...), &out, &errb)
		if exitCode(err) != exitNoDaemon {
			t.Fatalf("%q: exit %d (%v), want %d", args, exitCode(err), err, exitNoDaemon)
		}
		want := "dmsyncd is not running (no socket at " + sock + "): start it with `systemctl start dmsyncd`"
		if err.Error() != want {
			t.Fatalf("%q: %q, want %q", args, err, want)
		}
	}
}

func TestCreatePrint(t *testing.T) {
	e := newEnv(t)
	e.host.Files["/etc/k"] = true
	out, stderr, code := e.run("volume", "create", "v", "--data", "/dev/vdb", "--mirror", "/dev/vdc", "--crypt", "luks2", "--key-file", "/etc/k", "--print")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "# ") ||
		!strings.HasPrefix(lines[1], "dmsetup create v-mirror --uuid DMSYNC-MIRROR-") ||
		!strings.Contains(lines[1], "mirror userspace 4 ") || !strings.Contains(lines[1], "2 /dev/vdb 0 /dev/vdc 0 1 handle_errors'") ||
		lines[2] != "cryptsetup luksFormat --batch-mode --type luks2 --key-file /etc/k /dev/mapper/v-mirror" ||
		lines[3] != "cryptsetup open --type luks2 --key-file /etc/k /dev/mapper/v-mirror v" {
		t.Fatalf("print:\n%s", out)
	}
	if len(e.dm.Devices()) != 0 {
		t.Fatalf("--print made devices: %v", e.dm.Devices())
	}
}

// TestCreatePrintWithoutDaemon: --print plans on this machine's
// device-mapper and never dials dmsyncd.
func TestCreatePrintWithoutDaemon(t *testing.T) {
	e := newEnv(t)
	e.sock = filepath.Join(t.TempDir(), "none.sock")
	out, stderr, code := e.run("volume", "create", "v", "--data", "/dev/vdb", "--print")
	if code != 0 || !strings.Contains(out, "dmsetup create v --uuid DMSYNC-") {
		t.Fatalf("exit %d, out %q, stderr %q", code, out, stderr)
	}
}
