package guest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// TestKernelModules checks that the modules dmsync needs are loaded.
func TestKernelModules(t *testing.T) {
	guesttest.Require(t)
	for _, m := range []string{"dm_mod", "dm_mirror", "dm_log_userspace", "dm_crypt", "dm_flakey", "ext4", "loop", "veth"} {
		if _, err := os.Stat("/sys/module/" + m); err != nil {
			t.Errorf("module %s not loaded: %v", m, err)
		}
	}
	targets := guesttest.Require(t).Run("dmsetup", "targets")
	for _, tg := range []string{"mirror", "crypt", "linear", "flakey", "error"} {
		if !strings.Contains(targets, tg) {
			t.Errorf("dmsetup targets lacks %q:\n%s", tg, targets)
		}
	}
}

// sectors returns a device's size in 512-byte sectors.
func sectors(t *testing.T, dev string) int64 {
	t.Helper()
	n, err := guesttest.DeviceSize(dev)
	if err != nil {
		t.Fatal(err)
	}
	return n / 512
}

// writeAndCheck writes random blocks with O_DIRECT through top and checks
// that each leg holds them, read back with O_DIRECT.
func writeAndCheck(t *testing.T, top string, legs ...string) {
	t.Helper()
	for _, off := range []int64{0, 4096, 1 << 20, 7<<20 + 8192, 63 << 20} {
		data := make([]byte, 64<<10)
		rand.Read(data)
		if err := guesttest.WriteDirect(top, off, data); err != nil {
			t.Fatal(err)
		}
		for _, leg := range legs {
			got, err := guesttest.ReadDirect(leg, off, len(data))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("%s at %d does not hold what was written through %s", leg, off, top)
			}
		}
	}
}

func assertRemoved(t *testing.T, g *guesttest.G, name string) {
	t.Helper()
	g.Run("dmsetup", "remove", name)
	if _, err := os.Stat("/dev/mapper/" + name); err == nil {
		t.Errorf("/dev/mapper/%s still exists after dmsetup remove", name)
	}
	if ls := g.Run("dmsetup", "ls"); strings.Contains(ls, name) {
		t.Errorf("dmsetup ls still lists %s:\n%s", name, ls)
	}
}

// TestKernelLinear creates a linear device over a virtio disk, writes
// through it with O_DIRECT and finds the data on the disk.
func TestKernelLinear(t *testing.T) {
	g := guesttest.Require(t)
	disk := g.Disk(0)
	n := sectors(t, disk)
	g.Run("dmsetup", "create", "t-linear", "--table", fmt.Sprintf("0 %d linear %s 0", n, disk))
	g.Cleanup("dmsetup", "remove", "--force", "t-linear")
	if got := sectors(t, "/dev/mapper/t-linear"); got != n {
		t.Fatalf("t-linear has %d sectors, want %d", got, n)
	}
	writeAndCheck(t, "/dev/mapper/t-linear", disk)
	assertRemoved(t, g, "t-linear")
}

// TestKernelMirrorCore creates a two-leg mirror with the kernel's core log
// over two virtio disks; every O_DIRECT write lands on both legs.
func TestKernelMirrorCore(t *testing.T) {
	g := guesttest.Require(t)
	a, b := g.Disk(1), g.Disk(2)
	n := min(sectors(t, a), sectors(t, b))
	table := fmt.Sprintf("0 %d mirror core 2 1024 nosync 2 %s 0 %s 0 1 handle_errors", n, a, b)
	g.Run("dmsetup", "create", "t-mirror", "--table", table)
	g.Cleanup("dmsetup", "remove", "--force", "t-mirror")
	status := g.Run("dmsetup", "status", "t-mirror")
	if !strings.Contains(status, " AA ") {
		t.Fatalf("mirror legs not both alive: %q", status)
	}
	writeAndCheck(t, "/dev/mapper/t-mirror", a, b)
	assertRemoved(t, g, "t-mirror")
}
