//go:build linux

package logd_test

// Real-kernel tests: a mirror whose userspace dirty log is served by the
// dmsyncd binary, in the dmsync QEMU guest (see test/vm). They skip
// elsewhere.

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/guesttest"
	"github.com/dmsync/dmsync/pebble"
)

const (
	mirrorSectors = 64 << 20 / 512 // 64 MiB of each leg
	regionSectors = 1024           // 512 KiB regions
	regionBytes   = regionSectors * 512
)

// startDmsyncd starts the daemon on stateDir and waits for READY=1.
func startDmsyncd(t *testing.T, g *guesttest.G, stateDir string, env ...string) *guesttest.Daemon {
	t.Helper()
	level := "debug"
	if strings.HasPrefix(t.Name(), "TestKernelKill9") {
		level = "DEBUG-4" // every request and reply
	}
	return g.StartDaemon(guesttest.DaemonOptions{StateDir: stateDir, Env: env, Args: []string{"--log-level", level}})
}

// storedPending opens the (stopped) daemon's store and returns the pending
// regions of uuid.
func storedPending(t *testing.T, stateDir, uuid string) map[uint64]uint64 {
	t.Helper()
	db, err := pebble.Open(filepath.Join(stateDir, "pebble"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	vols, err := db.LoadDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.UUID == uuid {
			return v.Pending
		}
	}
	t.Fatalf("volume %s not in the store (volumes: %v)", uuid, vols)
	return nil
}

func mirrorTable(uuid, log string, legA, legB string) string {
	return fmt.Sprintf("0 %d mirror userspace %d %s %s 2 %s 0 %s 0 1 handle_errors",
		mirrorSectors, 1+len(strings.Fields(log)), uuid, log, legA, legB)
}

// legsIdentical compares the mirrored range of both legs with O_DIRECT.
func legsIdentical(t *testing.T, a, b string) {
	t.Helper()
	const step = 1 << 20
	for off := int64(0); off < mirrorSectors*512; off += step {
		x, err := guesttest.ReadDirect(a, off, step)
		if err != nil {
			t.Fatal(err)
		}
		y, err := guesttest.ReadDirect(b, off, step)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Fatalf("mirror legs %s and %s differ in the MiB at %d", a, b, off)
		}
	}
}

func waitInSync(t *testing.T, g *guesttest.G, name string) string {
	t.Helper()
	var st string
	for range 1200 {
		st = g.Run("dmsetup", "status", name)
		f := strings.Fields(st)
		// 0 N mirror 2 A B done/total ...
		if len(f) > 6 {
			if p := strings.Split(f[6], "/"); len(p) == 2 && p[0] == p[1] {
				return st
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never in sync: %s", name, st)
	return st
}

// TestKernelUserspaceLogMirror: a two-leg mirror on the userspace log
// served by dmsyncd carries ext4 (mkfs, mount, write, umount) with identical
// legs; suspend/resume, a table reload (new luid) and removal keep the
// state, and the written regions are pending in the store.
func TestKernelUserspaceLogMirror(t *testing.T) {
	g := guesttest.Require(t)
	a, b := g.WipeDisk(1), g.WipeDisk(2)
	state := t.TempDir()
	d := startDmsyncd(t, g, state)
	const uuid, name = "dmsync-t1", "t-ulog"
	g.Run("dmsetup", "create", name, "--table", mirrorTable(uuid, "core 1024", a, b))
	g.Cleanup("dmsetup", "remove", "--force", name)
	// A new log without nosync starts out of sync: the kernel resyncs it all.
	st := waitInSync(t, g, name)
	if !strings.Contains(st, " AA ") {
		t.Fatalf("legs not alive: %s", st)
	}
	dev := "/dev/mapper/" + name
	mnt := t.TempDir()
	g.Run("mkfs.ext4", "-q", "-F", dev)
	g.Run("mount", dev, mnt)
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(mnt, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	g.Run("umount", mnt)
	g.Run("dmsetup", "suspend", name)
	g.Run("dmsetup", "resume", name)
	// Reload: a new table instance (new luid) with the same log uuid.
	g.Run("dmsetup", "reload", name, "--table", mirrorTable(uuid, "core 1024", a, b))
	g.Run("dmsetup", "suspend", name)
	g.Run("dmsetup", "resume", name)
	g.Run("mount", dev, mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file changed across reload: %v", err)
	}
	g.Run("umount", mnt)
	g.Run("dmsetup", "remove", name)
	legsIdentical(t, a, b)
	if !strings.Contains(d.Log(), "log destroyed") {
		t.Errorf("no DTR seen on dmsetup remove:\n%s", d.Log())
	}
	d.Stop()
	p := storedPending(t, state, uuid)
	if len(p) == 0 {
		t.Fatal("mkfs and a file write left no pending region")
	}
	t.Logf("pending regions after mkfs+write: %d of %d", len(p), mirrorSectors/regionSectors)
}

// TestKernelPendingExact: O_DIRECT writes at known offsets make exactly the
// regions they touch pending, no fewer and no more.
func TestKernelPendingExact(t *testing.T) {
	g := guesttest.Require(t)
	a, b := g.WipeDisk(1), g.WipeDisk(2)
	state := t.TempDir()
	d := startDmsyncd(t, g, state)
	const uuid, name = "dmsync-t2", "t-exact"
	g.Run("dmsetup", "create", name, "--table", mirrorTable(uuid, "core 1024 nosync", a, b))
	g.Cleanup("dmsetup", "remove", "--force", name)
	dev := "/dev/mapper/" + name
	writes := []struct{ off, n int64 }{
		{0, 4096},                                    // region 0
		{5*regionBytes + 8192, 4096},                 // region 5
		{9*regionBytes - 4096, 8192},                 // straddles 8 and 9
		{100 * regionBytes, 3 * regionBytes},         // 100, 101, 102
		{127*regionBytes + regionBytes - 4096, 4096}, // last region
	}
	want := map[uint64]bool{}
	for _, w := range writes {
		buf := make([]byte, w.n)
		rand.Read(buf)
		if err := guesttest.WriteDirect(dev, w.off, buf); err != nil {
			t.Fatal(err)
		}
		for r := w.off / regionBytes; r <= (w.off+w.n-1)/regionBytes; r++ {
			want[uint64(r)] = true
		}
	}
	g.Run("dmsetup", "remove", name)
	legsIdentical(t, a, b)
	d.Stop()
	p := storedPending(t, state, uuid)
	var got, exp []uint64
	for r := range p {
		got = append(got, r)
	}
	for r := range want {
		exp = append(exp, r)
	}
	slices.Sort(got)
	slices.Sort(exp)
	if !slices.Equal(got, exp) {
		t.Fatalf("pending regions %v, want exactly %v", got, exp)
	}
}

// TestKernelBadTable: a bad region size fails the table load, the daemon
// logs a readable reason and keeps serving.
func TestKernelBadTable(t *testing.T) {
	g := guesttest.Require(t)
	a, b := g.WipeDisk(1), g.WipeDisk(2)
	d := startDmsyncd(t, g, t.TempDir())
	for _, log := range []string{"core 100", "core 4", "core 1024 sometimes"} {
		if _, err := g.Try("dmsetup", "create", "t-bad", "--table", mirrorTable("dmsync-bad", log, a, b)); err == nil {
			g.Run("dmsetup", "remove", "t-bad")
			t.Fatalf("table with log %q loaded", log)
		}
		g.Try("dmsetup", "remove", "--force", "t-bad")
	}
	for _, reason := range []string{"region size 100 sectors", "region size 4 sectors", "unknown log argument"} {
		if !strings.Contains(d.Log(), reason) {
			t.Errorf("daemon log lacks %q", reason)
		}
	}
	g.Run("dmsetup", "create", "t-good", "--table", mirrorTable("dmsync-good", "core 1024 nosync", a, b))
	g.Run("dmsetup", "remove", "t-good")
	d.Stop()
}

// TestKernelKill9Restart: the daemon is killed while a writer keeps writing
// to the mirror; after a restart the I/O continues, the legs are identical
// and every region written (before, during or after the outage) is pending.
//
// Until the kill the writer writes to the first half of the mirror; from
// the kill on, to the second half, whose regions the kernel has not marked
// yet: each of those writes needs a MARK, so it completes only once the
// restarted daemon answers (a write to a region already marked would go
// through with no daemon at all).
func TestKernelKill9Restart(t *testing.T) {
	g := guesttest.Require(t)
	a, b := g.WipeDisk(1), g.WipeDisk(2)
	state := t.TempDir()
	d := startDmsyncd(t, g, state)
	const uuid, name = "dmsync-t4", "t-kill"
	g.Run("dmsetup", "create", name, "--table", mirrorTable(uuid, "core 1024 nosync", a, b))
	g.Cleanup("dmsetup", "remove", "--force", name)
	dev := "/dev/mapper/" + name

	const blocks, half = mirrorSectors * 512 / 4096, mirrorSectors * 512 / regionBytes / 2
	var (
		mu      sync.Mutex
		written = map[uint64]bool{}
		werr    error
		killed  atomic.Bool // the writer moves to the second half
		stop    = make(chan struct{})
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _ := rand.Int(rand.Reader, big.NewInt(blocks/2))
			off := n.Int64() * 4096
			if killed.Load() {
				off += blocks / 2 * 4096
			}
			rand.Read(buf)
			if err := guesttest.WriteDirect(dev, off, buf); err != nil {
				mu.Lock()
				werr = err
				mu.Unlock()
				return
			}
			mu.Lock()
			written[uint64(off/regionBytes)] = true
			mu.Unlock()
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(written) }
	// after counts the regions of the second half written.
	after := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for r := range written {
			if r >= half {
				n++
			}
		}
		return n
	}
	time.Sleep(3 * time.Second)
	before := count()
	killed.Store(true)
	d.Kill9()
	time.Sleep(time.Second)
	d = startDmsyncd(t, g, state)
	// The kernel re-sends what the dead daemon never answered (after its
	// timeout) or reconnects with CTR+RESUME: writes must flow again.
	deadline := time.Now().Add(60 * time.Second)
	for after() <= 5 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	<-done
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	if n := after(); n <= 5 {
		t.Fatalf("I/O did not continue after the restart: %d of the %d regions not marked before the kill were written in 60 s", n, half)
	}
	// The kernel's state stands across a daemon restart: the mirror stays
	// in sync (a region the restarted daemon called out of sync would have
	// taken writes on one leg only).
	t.Logf("after the restart: %s", waitInSync(t, g, name))
	// How the kernel found the restarted daemon: a request re-sent after its
	// timeout, or a reconnect (CTR with NUL + RESUME) after a failed send.
	for _, l := range strings.Split(d.Log(), "\n") {
		if strings.Contains(l, "re-sent a request") || strings.Contains(l, "kernel reconnected") {
			t.Logf("restart: %s", l[strings.Index(l, "msg="):])
		}
	}
	g.Run("dmsetup", "remove", name)
	legsIdentical(t, a, b)
	d.Stop()
	p := storedPending(t, state, uuid)
	for r := range written {
		if _, ok := p[r]; !ok {
			t.Errorf("region %d was written but is not pending", r)
		}
	}
	t.Logf("%d regions written (%d before the kill), %d pending", len(written), before, len(p))
}

// TestKernelCryptOnUserspaceLog: LUKS2 on the mirror: format, mount,
// write; the legs hold identical ciphertext.
func TestKernelCryptOnUserspaceLog(t *testing.T) {
	g := guesttest.Require(t)
	a, b := g.WipeDisk(1), g.WipeDisk(2)
	d := startDmsyncd(t, g, t.TempDir())
	const name = "t-crypt"
	g.Run("dmsetup", "create", name, "--table", mirrorTable("dmsync-t5", "core 1024 nosync", a, b))
	g.Cleanup("dmsetup", "remove", "--force", name)
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, []byte("correct horse battery staple"), 0o600)
	g.Run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", key, "/dev/mapper/"+name)
	g.Run("cryptsetup", "open", "--key-file", key, "/dev/mapper/"+name, name+"-plain")
	t.Cleanup(func() { g.Try("cryptsetup", "close", name+"-plain") })
	mnt := t.TempDir()
	g.Run("mkfs.ext4", "-q", "-F", "/dev/mapper/"+name+"-plain")
	g.Run("mount", "/dev/mapper/"+name+"-plain", mnt)
	data := make([]byte, 2<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(mnt, "f"), data, 0o644)
	g.Run("umount", mnt)
	g.Run("cryptsetup", "close", name+"-plain")
	g.Run("dmsetup", "remove", name)
	legsIdentical(t, a, b)
	d.Stop()
}
