//go:build linux

package dmtarget_test

// Real-kernel tests of the failed-leg handling: dmsyncd serves the log and
// its leg watcher reacts to the dm event; a writer on ext4 runs
// throughout and reports its longest stall.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/guesttest"
)

const legSectors = 131072 // 64 MiB legs: the kernel's resync stays short under TCG

// healthyLine is the state line of `dmsync volume status` for a healthy volume.
var healthyLine = fmt.Sprintf("%-12s %s", "state:", "healthy")

// writer appends 64 KiB records to a file and fdatasyncs each, timing
// every write+sync: the longest one is the stall an application sees.
type writer struct {
	mu         sync.Mutex
	n, errs    int
	maxStall   time.Duration
	firstErr   error
	firstErrAt time.Time
	stop, done chan struct{}
}

func startWriter(t *testing.T, path string) *writer {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	buf := bytes.Repeat([]byte("dmsync-leg-writer"), 64<<10/17+1)[:64<<10]
	go func() {
		defer close(w.done)
		defer f.Close()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			t0 := time.Now()
			_, err := f.Write(buf)
			if err == nil {
				err = f.Sync()
			}
			d := time.Since(t0)
			w.mu.Lock()
			w.maxStall = max(w.maxStall, d)
			if err != nil {
				w.errs++
				if w.firstErr == nil {
					w.firstErr, w.firstErrAt = err, time.Now()
				}
			} else {
				w.n++
			}
			w.mu.Unlock()
			if err != nil {
				time.Sleep(50 * time.Millisecond)
			}
			if i%64 == 63 { // keep the file small
				f.Truncate(0)
			}
		}
	}()
	return w
}

// finish stops the writer; a writer still blocked after 30 s fails the
// test (a hung write).
func (w *writer) finish(t *testing.T) (n, errs int, stall time.Duration, firstErr error, firstErrAt time.Time) {
	t.Helper()
	close(w.stop)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Fatalf("writer hung: a write or fdatasync has not returned for 30 s (%d done before)", w.n)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.errs, w.maxStall, w.firstErr, w.firstErrAt
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n + w.errs
}

type cli struct {
	t    *testing.T
	bin  string
	sock string
}

func (c cli) run(args ...string) (string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.bin, append([]string{"--socket", c.sock}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		c.t.Fatalf("dmsync %v: %v", args, err)
	}
	return string(out), 0
}

// waitStatus polls `dmsync volume status` until it contains want.
func (c cli) waitStatus(name, want string, limit time.Duration) (string, time.Duration) {
	c.t.Helper()
	t0 := time.Now()
	for {
		out, _ := c.run("volume", "status", name)
		if strings.Contains(out, want) {
			return out, time.Since(t0)
		}
		if time.Since(t0) > limit {
			c.t.Fatalf("volume status %s has no %q after %v:\n%s", name, want, limit, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func legsSetup(t *testing.T) (*guesttest.G, *dmtarget.Control, cli, *guesttest.Daemon) {
	g, ctl := openDM(t)
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	d := g.StartDaemon(guesttest.DaemonOptions{Args: []string{"--admin-socket", sock}})
	return g, ctl, cli{t: t, bin: g.Bin("dmsync"), sock: sock}, d
}

func mustExit(t *testing.T, what string, out string, code, wantCode int, wantText string) {
	t.Helper()
	if code != wantCode || !strings.Contains(out, wantText) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Errorf("%s: exit %d (want %d), output %q (want one line with %q)", what, code, wantCode, out, wantText)
	} else {
		t.Logf("%s: %s", what, strings.TrimSpace(out))
	}
}

// TestKernelLegFailTwoDisk: leg 0 of a two-disk mirror fails writes at run
// time; the daemon moves the volume onto the survivor, writes go on, the
// status names the failed leg (after a daemon restart too); a repair with
// a new leg resyncs it, and the legs end up identical.
func TestKernelLegFailTwoDisk(t *testing.T) {
	g, ctl, c, d := legsSetup(t)
	mkdev(t, ctl, "k-lg-leg0", fmt.Sprintf("0 %d linear %s 0", legSectors, g.Disk(1)))
	mkdev(t, ctl, "k-lg-leg1", fmt.Sprintf("0 %d linear %s 0", legSectors, g.Disk(2)))
	mkdev(t, ctl, "k-lg-new", fmt.Sprintf("0 %d linear %s 0", legSectors, g.Disk(3)))
	mkdev(t, ctl, "k-lg-small", fmt.Sprintf("0 %d linear %s %d", 2048, g.Disk(3), legSectors))
	mkdev(t, ctl, "k-lg-zero", "0 2048 zero")
	if out, code := c.run("volume", "create", "k-lg", "--data", "/dev/mapper/k-lg-leg0", "--mirror", "/dev/mapper/k-lg-leg1", "--region-size", "1M"); code != 0 {
		t.Fatalf("create: exit %d\n%s", code, out)
	}
	b := kernelBuilder(ctl)
	mnt := t.TempDir()
	t.Cleanup(func() {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		_ = b.Remove(context.Background(), "k-lg")
	})
	waitInSync(t, ctl, "k-lg")
	out, code := c.run("volume", "repair", "k-lg", "--mirror", "/dev/mapper/k-lg-new")
	mustExit(t, "repair of a healthy volume", out, code, 2, "volume k-lg is healthy (legs AA): nothing to repair")
	out, code = c.run("volume", "repair", "k-lg-zero", "--mirror", "/dev/mapper/k-lg-new")
	mustExit(t, "repair of a device that is no dmsync mirror", out, code, 4, "dm device k-lg-zero is not a dmsync volume")

	g.Run("mkfs.ext4", "-q", "/dev/mapper/k-lg")
	g.Run("mount", "/dev/mapper/k-lg", mnt)
	w := startWriter(t, filepath.Join(mnt, "log"))
	time.Sleep(2 * time.Second)
	before := w.count()
	tFault := time.Now()
	reload(t, ctl, "k-lg-leg0", fmt.Sprintf("0 %d error", legSectors))
	// Wait for the daemon's record of the failure (it names the repair),
	// not the leg's D: status shows that before the watcher reacted.
	status, took := c.waitStatus("k-lg", "--mirror NEWDEV", 30*time.Second)
	t.Logf("status %v after the fault:\n%s", took, status)
	time.Sleep(3 * time.Second)
	n, errs, stall, firstErr, _ := w.finish(t)
	t.Logf("two-disk, leg 0 failed at run time: %d writes (%d before the fault), %d errors, longest write+fdatasync %v", n, before, errs, stall.Round(time.Millisecond))
	if errs != 0 {
		t.Fatalf("writes failed on a two-disk volume with a healthy leg: %v", firstErr)
	}
	if n <= before {
		t.Fatalf("no write completed after the fault (%d before, %d in all)", before, n)
	}
	if !strings.Contains(status, "/dev/mapper/k-lg-leg0") || !strings.Contains(status, "--mirror NEWDEV") {
		t.Errorf("status does not name the failed leg and the repair:\n%s", status)
	}
	_, ms := mirrorStatus(t, ctl, "k-lg")
	t.Logf("mirror after the degrade: legs %c%c, %d/%d in sync, fault to status %v", ms.Legs[0].Health, ms.Legs[1].Health, ms.InSync, ms.Regions, time.Since(tFault).Round(time.Millisecond))

	// The record outlives the daemon.
	d.Stop()
	if log := d.Log(); !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "mirror leg failed") {
		t.Errorf("no error-level log line for the failure:\n%s", log)
	}
	d = g.StartDaemon(guesttest.DaemonOptions{StateDir: d.StateDir, Args: []string{"--admin-socket", c.sock}})
	// This daemon's cleanup runs before the first cleanup above, and a
	// mirror cannot be removed without its log daemon: remove it first.
	t.Cleanup(func() {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		_ = b.Remove(context.Background(), "k-lg")
	})
	status, _ = c.waitStatus("k-lg", "DEGRADED", 30*time.Second)
	if !strings.Contains(status, "/dev/mapper/k-lg-leg0") {
		t.Errorf("after a restart the status does not name the failed leg:\n%s", status)
	}

	out, code = c.run("volume", "repair", "k-lg", "--mirror", "/dev/mapper/k-lg-leg1")
	mustExit(t, "repair with the survivor itself", out, code, 2, "in use")
	out, code = c.run("volume", "repair", "k-lg", "--mirror", "/dev/mapper/k-lg-small")
	mustExit(t, "repair with a small device", out, code, 2, "smaller than the volume's")
	out, code = c.run("volume", "repair", "k-lg", "--data", "/dev/mapper/k-lg-new")
	mustExit(t, "repair --data of a degraded two-disk volume", out, code, 2, "to replace a failed second leg use --mirror")

	// The first write after the restart waits for the kernel to find the
	// new log server; time it apart from the repair.
	t0 := time.Now()
	if err := os.WriteFile(filepath.Join(mnt, "after-restart"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	g.Run("sync")
	t.Logf("first write+sync after the daemon restart: %v", time.Since(t0).Round(time.Millisecond))
	w = startWriter(t, filepath.Join(mnt, "log2"))
	time.Sleep(time.Second)
	out, code = c.run("volume", "repair", "k-lg", "--mirror", "/dev/mapper/k-lg-new")
	if code != 0 {
		t.Fatalf("repair: exit %d\n%s", code, out)
	}
	t.Logf("repair:\n%s", out)
	status, took = c.waitStatus("k-lg", healthyLine, 3*time.Minute)
	n, errs, stall, firstErr, _ = w.finish(t)
	t.Logf("repair resync took %v; writer during it: %d writes, %d errors, longest write+fdatasync %v", took.Round(time.Millisecond), n, errs, stall.Round(time.Millisecond))
	t.Logf("status after the repair:\n%s", status)
	if errs != 0 {
		t.Fatalf("writes failed during the repair: %v", firstErr)
	}
	g.Run("umount", mnt)
	g.Run("e2fsck", "-fn", "/dev/mapper/k-lg")
	waitInSync(t, ctl, "k-lg")
	compareLegs(t, "/dev/mapper/k-lg-leg1", "/dev/mapper/k-lg-new")
	t.Logf("legs /dev/mapper/k-lg-leg1 and /dev/mapper/k-lg-new identical (O_DIRECT, %d MiB)", legSectors*512>>20)
}

// TestKernelLegFailOneDisk: the data disk of a one-disk volume fails
// writes at run time; the daemon makes the volume fail I/O with EIO instead
// of hanging, status names the disk and the peer's replica; after the data
// is restored onto a new disk, repair --data brings the volume back.
func TestKernelLegFailOneDisk(t *testing.T) {
	g, ctl, c, d := legsSetup(t)
	mkdev(t, ctl, "k-lo-leg0", fmt.Sprintf("0 %d linear %s 0", legSectors, g.Disk(1)))
	mkdev(t, ctl, "k-lo-new", fmt.Sprintf("0 %d linear %s 0", legSectors, g.Disk(3)))
	mkdev(t, ctl, "k-lo-small", fmt.Sprintf("0 %d linear %s %d", 2048, g.Disk(3), legSectors))
	if out, code := c.run("volume", "create", "k-lo", "--data", "/dev/mapper/k-lo-leg0", "--region-size", "1M"); code != 0 {
		t.Fatalf("create: exit %d\n%s", code, out)
	}
	b := kernelBuilder(ctl)
	mnt := t.TempDir()
	t.Cleanup(func() {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		_ = b.Remove(context.Background(), "k-lo")
	})
	g.Run("mkfs.ext4", "-q", "/dev/mapper/k-lo")
	g.Run("mount", "/dev/mapper/k-lo", mnt)
	keep := bytes.Repeat([]byte("kept before the fault\n"), 4096)
	if err := os.WriteFile(filepath.Join(mnt, "kept"), keep, 0o600); err != nil {
		t.Fatal(err)
	}
	g.Run("sync")
	w := startWriter(t, filepath.Join(mnt, "log"))
	time.Sleep(2 * time.Second)
	before := w.count()
	tFault := time.Now()
	reload(t, ctl, "k-lo-leg0", fmt.Sprintf("0 %d error", legSectors))
	status, took := c.waitStatus("k-lo", "DATA DISK FAILED", 30*time.Second)
	t.Logf("status %v after the fault:\n%s", took, status)
	deadline := time.Now().Add(20 * time.Second)
	for w.count() < before+3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	n, errs, stall, firstErr, firstErrAt := w.finish(t)
	t.Logf("one-disk, data disk failed at run time: %d writes ok (%d before the fault), %d failed; first error %v after the fault: %v; longest write+fdatasync %v",
		n, before, errs, firstErrAt.Sub(tFault).Round(time.Millisecond), firstErr, stall.Round(time.Millisecond))
	if firstErr == nil {
		t.Fatal("no write failed with the data disk gone")
	}
	if !errors.Is(firstErr, unix.EIO) && !errors.Is(firstErr, unix.EROFS) {
		t.Errorf("first error %v, want EIO (or EROFS once ext4 aborted)", firstErr)
	}
	if _, err := guesttest.ReadDirect("/dev/mapper/k-lo", 0, 4096); !errors.Is(err, unix.EIO) {
		t.Errorf("O_DIRECT read of the failed volume: %v, want EIO", err)
	}
	if !strings.Contains(status, "/dev/mapper/k-lo-leg0") || !strings.Contains(status, "peer's replica") {
		t.Errorf("status does not name the disk and the replica:\n%s", status)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Logf("umount of the failed volume: %v (detached)", err)
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	}

	out, code := c.run("volume", "repair", "k-lo", "--mirror", "/dev/mapper/k-lo-new")
	mustExit(t, "repair --mirror of a failed data disk", out, code, 2, "--data NEWDEV")
	out, code = c.run("volume", "repair", "k-lo", "--data", "/dev/mapper/k-lo-small")
	mustExit(t, "repair --data with a small device", out, code, 2, "smaller than the volume's")

	// "Restore the replica": the fault was injected above the disk, so the
	// disk itself holds what the replica would (up to the writes in flight).
	g.Run("dd", "if="+g.Disk(1), "of=/dev/mapper/k-lo-new", "bs=1M", fmt.Sprintf("count=%d", legSectors*512>>20), "iflag=direct", "oflag=direct", "status=none")
	out, code = c.run("volume", "repair", "k-lo", "--data", "/dev/mapper/k-lo-new")
	if code != 0 {
		t.Fatalf("repair --data: exit %d\n%s", code, out)
	}
	t.Logf("repair --data:\n%s", out)
	status, _ = c.waitStatus("k-lo", healthyLine, time.Minute)
	t.Logf("status after the repair:\n%s", status)
	fsck, _ := g.Try("e2fsck", "-fy", "/dev/mapper/k-lo")
	t.Logf("e2fsck -fy after the restore: %s", strings.TrimSpace(fsck))
	g.Run("e2fsck", "-fn", "/dev/mapper/k-lo")
	g.Run("mount", "/dev/mapper/k-lo", mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "kept"))
	if err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("file written before the fault: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "after"), keep, 0o600); err != nil {
		t.Fatalf("write after the repair: %v", err)
	}
	g.Run("umount", mnt)
	if log := d.Log(); !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "data disk failed") {
		t.Errorf("no error-level log line for the failure:\n%s", log)
	}
}
