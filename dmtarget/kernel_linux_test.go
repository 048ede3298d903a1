//go:build linux

package dmtarget_test

// Real-kernel tests: they run inside the dmsync QEMU guest (test/vm) and
// skip elsewhere. The guest has no udev (DM_DISABLE_UDEV=1), four 512 MiB
// scratch disks /dev/vda..vdd and the dm modules loaded. The volume tests
// use the kernel's core log: they test the stack, not dmsyncd.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
	"github.com/dmsync/dmsync/internal/guesttest"
)

func openDM(t *testing.T) (*guesttest.G, *dmtarget.Control) {
	t.Helper()
	g := guesttest.Require(t)
	ctl, err := dmtarget.Open(dmtarget.Options{Udev: dmtarget.UdevOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Close() })
	return g, ctl
}

func kernelBuilder(ctl *dmtarget.Control) *dmtarget.Builder {
	return &dmtarget.Builder{
		DM:              ctl,
		Host:            dmtarget.SystemHost{Env: []string{"DM_DISABLE_UDEV=1"}},
		CryptFormatArgs: []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"},
	}
}

// mkdev creates a dm device with a table and removes it when the test ends.
func mkdev(t *testing.T, ctl *dmtarget.Control, name, table string) dmtarget.Info {
	t.Helper()
	ctx := context.Background()
	ts, err := dmtarget.ParseTable(table)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Create(ctx, name, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctl.Remove(context.Background(), name); err != nil && !errors.Is(err, dmtarget.ErrNotFound) {
			t.Logf("cleanup: %v", err)
		}
	})
	if err := ctl.Load(ctx, name, ts); err != nil {
		t.Fatal(err)
	}
	info, err := ctl.Resume(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func sectors(t *testing.T, path string) uint64 {
	t.Helper()
	n, err := dmtarget.SystemHost{}.DeviceSize(path)
	if err != nil {
		t.Fatal(err)
	}
	return n / 512
}

// reload swaps a device's table (suspend, load, resume).
func reload(t *testing.T, ctl *dmtarget.Control, name, table string) {
	t.Helper()
	ctx := context.Background()
	ts, err := dmtarget.ParseTable(table)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Suspend(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Load(ctx, name, ts); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Resume(ctx, name); err != nil {
		t.Fatal(err)
	}
}

func mirrorStatus(t *testing.T, ctl *dmtarget.Control, name string) (dmtarget.Info, dmtarget.MirrorStatus) {
	t.Helper()
	info, st, err := ctl.Status(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Type != "mirror" {
		t.Fatalf("status of %s: %+v, want one mirror target", name, st)
	}
	ms, err := dmtarget.ParseMirrorStatus(st[0].Params)
	if err != nil {
		t.Fatal(err)
	}
	return info, ms
}

func TestKernelSuite(t *testing.T) {
	_, ctl := openDM(t)
	dmtargettest.RunSuite(t, ctl, "k-")
}

func TestKernelDeviceNodes(t *testing.T) {
	_, ctl := openDM(t)
	info := mkdev(t, ctl, "k-node", "0 2048 zero")
	var st unix.Stat_t
	if err := unix.Stat("/dev/mapper/k-node", &st); err != nil {
		t.Fatalf("no node after create without udev: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(info.Major, info.Minor) {
		t.Fatalf("node mode %o rdev %#x, want block %s", st.Mode, st.Rdev, info.DevT())
	}
	buf := make([]byte, 4096)
	f, err := os.Open("/dev/mapper/k-node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatalf("read through the node: %v", err)
	}
	f.Close()
	names, err := ctl.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range names {
		found = found || (n.Name == "k-node" && n.Major == info.Major && n.Minor == info.Minor)
	}
	if !found {
		t.Fatalf("List %+v lacks k-node %s", names, info.DevT())
	}
	if err := ctl.Remove(context.Background(), "k-node"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/dev/mapper/k-node"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("node left after remove: %v", err)
	}
}

// TestKernelMessageAndTableStatus uses log-writes, a target that takes
// messages, and checks a multi-target table round trip.
func TestKernelMessageAndTableStatus(t *testing.T) {
	g, ctl := openDM(t)
	a, b := g.Disk(1), g.Disk(2)
	n := sectors(t, a)
	mkdev(t, ctl, "k-lw", fmt.Sprintf("0 %d log-writes %s %s", n, a, b))
	if _, err := ctl.Message(context.Background(), "k-lw", 0, "mark dmsync-test"); err != nil {
		t.Fatalf("message mark: %v", err)
	}
	if _, err := ctl.Message(context.Background(), "k-lw", 0, "no-such-message"); err == nil {
		t.Fatal("an unknown message was accepted")
	}
	table := fmt.Sprintf("0 1024 linear %s 0\n1024 8 error\n1032 1024 zero\n2056 2048 linear %s 4096", a, b)
	mkdev(t, ctl, "k-multi", table)
	_, got, err := ctl.Table(context.Background(), "k-multi")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[1].Type != "error" || got[3].Start != 2056 || got[3].Length != 2048 || !strings.HasSuffix(got[3].Params, " 4096") {
		t.Fatalf("table %+v", got)
	}
}

// TestKernelOneDiskReadFailure proves the sink leg never returns data:
// with leg 0 reloaded to `error` under a mounted file system, reads fail
// with EIO (they would return zeros with a `zero` leg), the mirror reports
// both legs R, and a DM_DEV_WAIT sees the event.
func TestKernelOneDiskReadFailure(t *testing.T) {
	g, ctl := openDM(t)
	ctx := context.Background()
	disk := g.Disk(1)
	n := sectors(t, disk)
	mkdev(t, ctl, "k-rf-leg0", fmt.Sprintf("0 %d linear %s 0", n, disk))
	b := kernelBuilder(ctl)
	if _, err := b.Create(ctx, dmtarget.VolumeSpec{Name: "k-rf", Data: "/dev/mapper/k-rf-leg0", Log: dmtarget.LogCore}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Remove(context.Background(), "k-rf") })
	if _, ms := mirrorStatus(t, ctl, "k-rf"); !ms.Healthy() || ms.InSync != ms.Regions {
		t.Fatalf("fresh one-disk mirror: %+v", ms)
	}
	mnt := t.TempDir()
	g.Run("mkfs.ext4", "-q", "/dev/mapper/k-rf")
	g.Run("mount", "/dev/mapper/k-rf", mnt)
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	data := make([]byte, 4<<20)
	rand.Read(data)
	file := filepath.Join(mnt, "data")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	g.Run("sync")
	// The data is on leg 0 (checked through leg 0 itself, not the mirror).
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back before the failure: %v", err)
	}
	// No write may reach the failed leg: with handle_errors a failed write
	// is held until the volume is repaired (the leg shows D, not R, and the
	// cleanup's umount hangs; seen in CI). So the file system goes
	// read-only, and the file stays open: after the failure only its data
	// is read (a failed metadata read, such as the directory lookup, is an
	// ext4 error, and ext4 records errors by writing its superblock).
	fd, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	g.Run("mount", "-o", "remount,ro", mnt)
	info, _ := mirrorStatus(t, ctl, "k-rf")
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
	reload(t, ctl, "k-rf-leg0", fmt.Sprintf("0 %d error", n))

	got, readErr := io.ReadAll(fd)
	if err := readErr; err == nil {
		zero := bytes.Count(got, []byte{0}) == len(got)
		t.Fatalf("read with leg 0 failing returned %d bytes (all zeros: %v), want EIO", len(got), zero)
	}
	if !errors.Is(readErr, syscall.EIO) {
		t.Fatalf("read error %v, want EIO", readErr)
	}
	// The raw mirror too, bypassing the page cache.
	if _, err := guesttest.ReadDirect("/dev/mapper/k-rf", 64<<20, 4096); !errors.Is(err, syscall.EIO) {
		t.Fatalf("O_DIRECT read of the mirror: %v, want EIO", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	winfo, _, err := ctl.Wait(wctx, "k-rf", info.EventNr)
	if err != nil {
		t.Fatalf("no dm event after the leg failed: %v", err)
	}
	if winfo.EventNr == info.EventNr {
		t.Fatalf("Wait returned the old event number %d", info.EventNr)
	}
	_, ms := mirrorStatus(t, ctl, "k-rf")
	if ms.Legs[0].Health != dmtarget.LegReadFailed || ms.Healthy() {
		t.Fatalf("status after the read failure: %+v", ms)
	}
	vs, err := b.Status(ctx, "k-rf")
	if err != nil || vs.Mirror.Legs[0].Health != dmtarget.LegReadFailed || !vs.OneDisk {
		t.Fatalf("volume status: %+v, %v", vs, err)
	}
	t.Logf("one-disk read with leg 0 failing: %v; mirror legs %c%c", readErr, ms.Legs[0].Health, ms.Legs[1].Health)
	fd.Close()
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Logf("umount after the failure: %v (lazy)", err)
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	}
}

// TestKernelTwoDiskLegFailure: in two-disk mode a read that fails on leg 0
// is served by leg 1 (same data), and status reports leg 0 as R.
func TestKernelTwoDiskLegFailure(t *testing.T) {
	g, ctl := openDM(t)
	ctx := context.Background()
	a, b := g.Disk(1), g.Disk(2)
	n := sectors(t, a)
	mkdev(t, ctl, "k-lf-leg0", fmt.Sprintf("0 %d linear %s 0", n, a))
	mkdev(t, ctl, "k-lf-leg1", fmt.Sprintf("0 %d linear %s 0", n, b))
	no := false
	bl := kernelBuilder(ctl)
	if _, err := bl.Create(ctx, dmtarget.VolumeSpec{Name: "k-lf", Data: "/dev/mapper/k-lf-leg0", Mirror: "/dev/mapper/k-lf-leg1",
		Log: dmtarget.LogCore, RegionSize: 1 << 20, Sync: &no}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bl.Remove(context.Background(), "k-lf") })
	data := make([]byte, 1<<20)
	rand.Read(data)
	if err := guesttest.WriteDirect("/dev/mapper/k-lf", 8<<20, data); err != nil {
		t.Fatal(err)
	}
	reload(t, ctl, "k-lf-leg0", fmt.Sprintf("0 %d error", n))
	got, err := guesttest.ReadDirect("/dev/mapper/k-lf", 8<<20, len(data))
	if err != nil {
		t.Fatalf("read with leg 0 failing (leg 1 healthy): %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read served by leg 1 returned other data")
	}
	vs, err := bl.Status(ctx, "k-lf")
	if err != nil {
		t.Fatal(err)
	}
	if vs.Mirror.Legs[0].Health != dmtarget.LegReadFailed || vs.Mirror.Legs[1].Health != dmtarget.LegAlive {
		t.Fatalf("legs %+v, want leg 0 R and leg 1 A", vs.Mirror.Legs)
	}
}

// TestKernelVolumes creates and removes volumes in both modes, with and
// without crypt: mkfs, mount, write, umount, fsck; in two-disk mode the
// legs end up identical.
func TestKernelVolumes(t *testing.T) {
	g, ctl := openDM(t)
	key := filepath.Join(t.TempDir(), "key")
	k := make([]byte, 64)
	rand.Read(k)
	if err := os.WriteFile(key, k, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mirror bool
		crypt  string
	}{
		{"onedisk", false, ""},
		{"onedisk-luks2", false, "luks2"},
		{"twodisk", true, ""},
		{"twodisk-plain", true, "plain"},
		{"twodisk-luks2", true, "luks2"},
		{"onedisk-plain", false, "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			a, bdev := g.Disk(1), g.Disk(2)
			spec := dmtarget.VolumeSpec{Name: "k-vol", Data: a, Log: dmtarget.LogCore, Crypt: tc.crypt}
			if tc.crypt != "" {
				spec.KeyFile = key
			}
			if tc.mirror {
				spec.Mirror = bdev
			}
			b := kernelBuilder(ctl)
			p, err := b.Create(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Remove(context.Background(), "k-vol") })
			t.Logf("created with:\n%s", strings.Join(p.Commands(), "\n"))

			// The data disk is now held by the mirror: a second volume on it
			// is refused, naming the holder.
			if _, err := b.Plan(ctx, dmtarget.VolumeSpec{Name: "k-other", Data: a, Log: dmtarget.LogCore}); !errors.Is(err, dmtarget.ErrInvalid) || !strings.Contains(err.Error(), "held by") {
				t.Errorf("second volume on a held disk: %v", err)
			}
			mirror := "k-vol"
			if tc.crypt != "" {
				mirror = "k-vol-mirror"
			}
			waitInSync(t, ctl, mirror)

			dev := "/dev/mapper/k-vol"
			mnt := t.TempDir()
			g.Run("mkfs.ext4", "-q", dev)
			g.Run("mount", dev, mnt)
			data := make([]byte, 8<<20)
			rand.Read(data)
			if err := os.WriteFile(filepath.Join(mnt, "f"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			g.Run("sync")
			if err := b.Remove(ctx, "k-vol"); !errors.Is(err, dmtarget.ErrBusy) {
				t.Errorf("remove while mounted: %v, want ErrBusy", err)
			}
			if _, err := b.Plan(ctx, dmtarget.VolumeSpec{Name: "k-x", Data: dev, Log: dmtarget.LogCore}); !errors.Is(err, dmtarget.ErrInvalid) || !strings.Contains(err.Error(), "mounted at "+mnt) {
				t.Errorf("volume on a mounted device: %v", err)
			}
			g.Run("umount", mnt)
			g.Run("e2fsck", "-fn", dev)

			vols, err := b.List(ctx)
			vols = onlyTestVolumes(vols)
			if err != nil || len(vols) != 1 || vols[0].Name != "k-vol" || vols[0].OneDisk == tc.mirror || vols[0].Crypt != tc.crypt {
				t.Fatalf("List: %+v, %v", vols, err)
			}
			if tc.mirror {
				waitInSync(t, ctl, mirror)
				compareLegs(t, a, bdev)
			}
			if err := b.Remove(ctx, "k-vol"); err != nil {
				t.Fatal(err)
			}
			names, _ := ctl.List(ctx)
			for _, n := range names {
				if strings.HasPrefix(n.Name, "k-vol") {
					t.Fatalf("left after remove: %s", n.Name)
				}
			}
			if _, err := os.Stat(dev); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s left after remove", dev)
			}
		})
	}
}

func waitInSync(t *testing.T, ctl *dmtarget.Control, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for {
		info, ms := mirrorStatus(t, ctl, name)
		if ms.InSync == ms.Regions {
			return
		}
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		_, _, err := ctl.Wait(wctx, name, info.EventNr)
		wcancel()
		if ctx.Err() != nil {
			t.Fatalf("%s not in sync after 5m: %d/%d (%v)", name, ms.InSync, ms.Regions, err)
		}
	}
}

func compareLegs(t *testing.T, a, b string) {
	t.Helper()
	size, err := guesttest.DeviceSize(a)
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 4 << 20
	for off := int64(0); off < size; off += chunk {
		x, err := guesttest.ReadDirect(a, off, chunk)
		if err != nil {
			t.Fatal(err)
		}
		y, err := guesttest.ReadDirect(b, off, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Fatalf("legs %s and %s differ in the 4 MiB at %d", a, b, off)
		}
	}
}

// onlyTestVolumes drops volumes other tests may have left behind.
func onlyTestVolumes(vs []dmtarget.Volume) []dmtarget.Volume {
	var out []dmtarget.Volume
	for _, v := range vs {
		if strings.HasPrefix(v.Name, "k-") {
			out = append(out, v)
		}
	}
	return out
}
