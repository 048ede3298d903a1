package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/internal/guesttest"
	"github.com/dmsync/dmsync/logd/logapi"
)

// TestKernelFreeze freezes the devices stacked on a mirror whose userspace
// log dmsyncd serves (two linear devices, one on the other) through the
// log server's local API, while a writer does O_DIRECT 4 KiB writes to the
// top device: writes stop while frozen, the mirror underneath stays
// readable, Thaw says the freeze held and writes go on. A freeze nobody
// thaws is resumed by the log server itself, and so is one whose
// replicator is killed with SIGKILL.
func TestKernelFreeze(t *testing.T) {
	g := guesttest.Require(t)
	legA, legB := g.WipeDisk(0), g.WipeDisk(1)
	const (
		size    = 32 << 20
		name    = "fz"
		logUUID = "dmsync-freeze"
		mid     = "fz-mid"
		top     = "fz-top"
	)
	a := newNode(t, g, "fz", "", "--log-level", "debug")
	a.start(t)

	table := fmt.Sprintf("0 %d mirror userspace 4 %s core 1024 nosync 2 %s 0 %s 0 1 handle_errors", size/512, logUUID, legA, legB)
	g.Run("dmsetup", "create", name, "--table", table)
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name) })
	g.Run("dmsetup", "create", mid, "--table", fmt.Sprintf("0 %d linear /dev/mapper/%s 0", size/512, name))
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", mid) })
	g.Run("dmsetup", "create", top, "--table", fmt.Sprintf("0 %d linear /dev/mapper/%s 0", size/512, mid))
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", top) })
	w := startDirectWriter(t, "/dev/mapper/"+top, size)
	t.Cleanup(w.stop)
	// Whatever happens, nothing stays suspended (runs before w.stop).
	t.Cleanup(func() { g.Try("dmsetup", "resume", mid); g.Try("dmsetup", "resume", top) })
	w.waitMore(t, 20, "before any freeze")

	c, err := logapi.Dial(filepath.Join(a.dir, "logd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	// 1. Freeze, check, Thaw.
	w.takeStall()
	t0 := time.Now()
	fr, err := c.Freeze(ctx, logUUID, 5*time.Second, false)
	if err != nil {
		t.Fatalf("freeze: %v\n%s", err, a.d.Log())
	}
	took := time.Since(t0)
	if !slices.Equal(fr.Devices, []string{top, mid}) {
		t.Fatalf("froze %v, want [%s %s] (top-down)", fr.Devices, top, mid)
	}
	for _, d := range fr.Devices {
		if !strings.Contains(g.Run("dmsetup", "info", d), "SUSPENDED") {
			t.Fatalf("%s is not suspended after Freeze:\n%s", d, g.Run("dmsetup", "info", d))
		}
	}
	n0 := w.count()
	time.Sleep(time.Second)
	if n1 := w.count(); n1 > n0+1 { // one write may have completed as Freeze returned
		t.Fatalf("writes went on while frozen: %d writes in 1s", n1-n0)
	}
	// The mirror underneath stays readable.
	readDone := make(chan error, 1)
	go func() {
		_, err := guesttest.ReadDirect("/dev/mapper/"+name, 0, 1<<20)
		readDone <- err
	}()
	select {
	case err := <-readDone:
		if err != nil {
			t.Fatalf("read of the mirror while frozen: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a read of the mirror underneath blocked while the top devices were frozen")
	}
	held, pause, err := c.Thaw(ctx, logUUID, fr.Token)
	if err != nil || !held {
		t.Fatalf("thaw: held=%v err=%v, want held", held, err)
	}
	w.waitMore(t, 20, "after Thaw")
	fmt.Printf("freeze: %v suspended in %v (Freeze call), frozen ~1.2s with a mirror read, Thaw: held=%v pause=%v; writer's longest stall %v\n",
		fr.Devices, took.Round(time.Millisecond), held, pause.Round(time.Millisecond), w.takeStall().Round(time.Millisecond))

	// 2. Nobody thaws: the log server resumes after max_pause.
	fr, err = c.Freeze(ctx, logUUID, 500*time.Millisecond, false)
	if err != nil {
		t.Fatalf("freeze with 500ms: %v", err)
	}
	w.waitMore(t, 20, "after a freeze of 500ms with no Thaw")
	held, pause, err = c.Thaw(ctx, logUUID, fr.Token)
	if err != nil || held {
		t.Fatalf("thaw after the auto-thaw: held=%v err=%v, want held=false", held, err)
	}
	if !strings.Contains(a.d.Log(), "auto-thaw") {
		t.Fatalf("the log server did not log the auto-thaw:\n%s", a.d.Log())
	}
	fmt.Printf("freeze: auto-thaw with max_pause 500ms: pause=%v; writer's longest stall %v\n",
		pause.Round(time.Millisecond), w.takeStall().Round(time.Millisecond))

	// 3. The replicator is killed while frozen: the log server resumes.
	fr, err = c.Freeze(ctx, logUUID, logapi.MaxPause, false)
	if err != nil {
		t.Fatalf("freeze with the longest pause: %v", err)
	}
	n0 = w.count()
	pid := replicatorPID(t, a.dir)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	w.waitMore(t, 20, "after the replicator was killed while frozen")
	if !strings.Contains(a.d.Log(), "the replicator exited") {
		t.Fatalf("the log server did not resume on the replicator's exit:\n%s", a.d.Log())
	}
	held, pause, err = c.Thaw(ctx, logUUID, fr.Token)
	if err != nil || held {
		t.Fatalf("thaw after the replicator died: held=%v err=%v, want held=false", held, err)
	}
	fmt.Printf("freeze: replicator (pid %d) killed while frozen: writes went on %v after the kill (auto-thaw was %v away), pause=%v, %d writes since\n",
		pid, time.Since(killed).Round(time.Millisecond), logapi.MaxPause, pause.Round(time.Millisecond), w.count()-n0)

	// A freeze works again afterwards (the log server kept its state).
	fr, err = c.Freeze(ctx, logUUID, 2*time.Second, false)
	if err != nil {
		t.Fatalf("freeze after the replicator restarted: %v", err)
	}
	if held, _, err := c.Thaw(ctx, logUUID, fr.Token); err != nil || !held {
		t.Fatalf("last thaw: held=%v err=%v", held, err)
	}
	w.waitMore(t, 5, "at the end")

	// 4. fsfreeze: ext4 on the top device is frozen too (suspend without
	// DM_SKIP_LOCKFS), and a Thaw unfreezes it.
	w.stop()
	mnt := "/mnt/freeze"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	g.Run("mkfs.ext4", "-q", "-F", "/dev/mapper/"+top)
	g.Run("mount", "-o", "noatime", "/dev/mapper/"+top, mnt)
	t.Cleanup(func() { g.Try("umount", mnt) })
	if err := os.WriteFile(filepath.Join(mnt, "before"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	fr, err = c.Freeze(ctx, logUUID, 5*time.Second, true)
	if err != nil {
		t.Fatalf("freeze with fsfreeze: %v", err)
	}
	took = time.Since(t0)
	wrote := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(mnt, "during"))
		if err == nil {
			_, err = f.Write([]byte("y"))
			if err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("a file was written and synced on the frozen file system (err %v)", err)
	case <-time.After(time.Second):
	}
	held, pause, err = c.Thaw(ctx, logUUID, fr.Token)
	if err != nil || !held {
		t.Fatalf("thaw with fsfreeze: held=%v err=%v", held, err)
	}
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("file write after the thaw: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the file system stayed frozen after Thaw")
	}
	for _, l := range strings.Split(a.d.Log(), "\n") {
		if strings.Contains(l, "component=freeze") {
			fmt.Println("log server:", l)
		}
	}
	fmt.Printf("freeze: fsfreeze of ext4 on %s: Freeze call %v, Thaw held=%v pause=%v; a file write waited for the thaw\n",
		top, took.Round(time.Millisecond), held, pause.Round(time.Millisecond))
}

// replicatorPID finds the `dmsyncd __replicator` child of the daemon with
// that state directory.
func replicatorPID(t *testing.T, stateDir string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			args := strings.Split(string(b), "\x00")
			if slices.Contains(args, "__replicator") && slices.Contains(args, stateDir) {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no `dmsyncd __replicator` process with --state-dir %s", stateDir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// directWriter writes 4 KiB blocks with O_DIRECT, one after the other,
// cycling through the device, and counts the completed writes.
type directWriter struct {
	n       atomic.Int64
	quit    atomic.Bool
	done    chan struct{}
	mu      sync.Mutex
	last    time.Time
	stall   time.Duration // longest gap between completions since takeStall
	err     error
	stopped sync.Once
}

func startDirectWriter(t *testing.T, path string, size int64) *directWriter {
	t.Helper()
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s O_DIRECT: %v", path, err)
	}
	w := &directWriter{done: make(chan struct{}), last: time.Now()}
	go func() {
		defer close(w.done)
		defer unix.Close(fd)
		buf := guesttest.AlignedBuffer(4096)
		for i := int64(0); !w.quit.Load(); i++ {
			copy(buf, fmt.Sprintf("write %d\n", i))
			if _, err := unix.Pwrite(fd, buf, (i*4096)%size); err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				return
			}
			now := time.Now()
			w.mu.Lock()
			w.stall = max(w.stall, now.Sub(w.last))
			w.last = now
			w.mu.Unlock()
			w.n.Add(1)
		}
	}()
	return w
}

func (w *directWriter) count() int64 { return w.n.Load() }

// takeStall returns the longest gap between two writes since the last
// call.
func (w *directWriter) takeStall() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stall
	w.stall = 0
	return s
}

// waitMore waits until k more writes have completed (at most a minute).
func (w *directWriter) waitMore(t *testing.T, k int64, when string) {
	t.Helper()
	want := w.count() + k
	deadline := time.Now().Add(time.Minute)
	for w.count() < want {
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		if err != nil {
			t.Fatalf("writer failed %s: %v", when, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes did not go on %s: %d completed, none for a minute", when, w.count())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *directWriter) stop() {
	w.stopped.Do(func() {
		w.quit.Store(true)
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.err != nil && !errors.Is(w.err, unix.EIO) {
			fmt.Printf("freeze writer: %v\n", w.err)
		}
	})
}
