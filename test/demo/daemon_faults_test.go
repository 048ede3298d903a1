package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dmsync/dmsync/internal/guesttest"
	"github.com/dmsync/dmsync/logd/logpb"
)

// TestKernelDaemonFaults injects faults into A's dmsyncd at run time while
// a writer on ext4 on A's mirror (userspace log) timestamps every write:
// a panic in replication code (a test-only hook), the listen port taken, a
// truncated config.json, a corrupt node key, a receive whose image cannot
// be opened, and the state directory's file system filling up (a small
// tmpfs). For each it reports the longest I/O stall, checks that the
// daemon's health (and `dmsync status` where it can) names the fault, and
// once the fault is cleared, that replication resumes and B equals A.
func TestKernelDaemonFaults(t *testing.T) {
	g := guesttest.Require(t)
	legA, legB, replica := g.WipeDisk(0), g.WipeDisk(1), g.WipeDisk(2)
	const size = 32 << 20
	const name, logUUID = "dfaults", "dmsync-dfaults"
	mirror := "/dev/mapper/" + name
	mnt := "/mnt/dfaults"

	// A's state dir on a small file system of its own, to fill later.
	stateA := "/var/lib/dmsync-da"
	if err := os.MkdirAll(stateA, 0o700); err != nil {
		t.Fatal(err)
	}
	g.Run("mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", stateA)
	t.Cleanup(func() { g.Try("umount", "-l", stateA) })
	a := newNode(t, g, "da", "", "--listen", "127.0.0.1:7421")
	startHooked(t, a)
	makeNetns(t, g, "nodedb", "10.97.0.1", "10.97.0.2")
	b := newNode(t, g, "db", "nodedb", "--no-connector", "--listen", "10.97.0.2:7420")
	b.start(t)
	b.cli("receive", logUUID, "--from", a.id, "--image", replica, "--size", "32M")

	table := fmt.Sprintf("0 %d mirror userspace 4 %s core 1024 nosync 2 %s 0 %s 0 1 handle_errors", size/512, logUUID, legA, legB)
	g.Run("dmsetup", "create", name, "--table", table)
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name) })
	g.Run("mkfs.ext4", "-q", "-F", mirror)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	g.Run("mount", "-o", "noatime", mirror, mnt)
	t.Cleanup(func() { g.Try("umount", mnt) })
	a.cli("peer", "add", b.id, "--addr", "10.97.0.2:7420")
	a.cli("replicate", name, "--to", b.id)

	w := startWriter(t, filepath.Join(mnt, "data"))
	defer w.stop()
	var rows []faultRow
	settle := func(fault string) {
		t.Helper()
		w.pause()
		g.Run("mount", "-o", "remount,ro", mnt)
		a.cli("wait", name, "--timeout", "5m")
		sameDevices(t, mirror, replica, size, fault)
		g.Run("mount", "-o", "remount,rw", mnt)
		w.resume()
	}
	settle("initial replication")

	// 1. A panic in replication code: the replicator dies in Replicated
	// (the hook panics while the trigger file exists) and is restarted
	// with backoff; the log server goes on.
	w.phase("panic")
	trigger := filepath.Join(stateA, "test-panic-replicated")
	touch(t, trigger)
	seen := waitHealth(t, a, "replicator down: panic: test hook")
	seen += statusNames(g, a, "replicator down")
	// 2. While it is down, another process takes its listen port: the
	// restarted replicator's receiver fails alone, sending goes on.
	var taken net.Listener
	for deadline := time.Now().Add(30 * time.Second); taken == nil; time.Sleep(20 * time.Millisecond) {
		if l, err := net.Listen("tcp", "127.0.0.1:7421"); err == nil {
			taken = l
		} else if time.Now().After(deadline) {
			t.Fatalf("the listen port never came free: %v", err)
		}
	}
	os.Remove(trigger)
	t0 := time.Now()
	waitHealth(t, a, "replicator up")
	rows = append(rows, w.row("panic in Replicated (test hook)", seen, fmt.Sprintf("restarted with backoff; up %s after the trigger was removed", time.Since(t0).Round(time.Second))))
	w.phase("port taken")
	seen = waitHealth(t, a, "address already in use")
	seen += statusNames(g, a, "address already in use")
	settle("listen port taken") // replication to B works meanwhile
	taken.Close()
	t0 = time.Now()
	waitNoProblems(t, a)
	rows = append(rows, w.row("listen port taken", seen, fmt.Sprintf("receiver retried with backoff; bound %s after the port was freed; sends ran throughout", time.Since(t0).Round(time.Second))))

	// 3. A truncated config.json, met at the replicator's next start.
	w.phase("config.json")
	cfgPath := filepath.Join(stateA, "config.json")
	good, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, good[:len(good)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	restartReplicator(t, a, stateA)
	seen = waitHealth(t, a, "config.json")
	seen += statusNames(g, a, "config.json")
	if err := os.WriteFile(cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	waitNoProblems(t, a)
	rows = append(rows, w.row("truncated config.json", seen, fmt.Sprintf("replication off, volumes and the log served; picked up %s after the file was fixed", time.Since(t0).Round(time.Second))))
	settle("truncated config.json")

	// 4. A corrupt node key.
	w.phase("node key")
	keyPath := filepath.Join(stateA, "node.key")
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, []byte("-----BEGIN PRIVATE KEY-----\ntruncated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	restartReplicator(t, a, stateA)
	seen = waitHealth(t, a, "node key")
	seen += statusNames(g, a, "node key")
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	waitNoProblems(t, a)
	rows = append(rows, w.row("corrupt node key", seen, fmt.Sprintf("replication off, the log served; picked up %s after the key was restored", time.Since(t0).Round(time.Second))))
	settle("corrupt node key")

	// 5. A receive whose image cannot be opened.
	w.phase("receive image")
	a.cli("receive", "other-vol", "--from", b.id, "--image", "/tmp/other.img", "--size", "1M")
	os.Remove("/tmp/other.img")
	a.cli("receive", "third-vol", "--from", b.id, "--image", "/tmp/third.img", "--size", "1M") // rebuilds the receiver
	seen = waitHealth(t, a, "receive other-vol")
	seen += statusNames(g, a, "other-vol")
	if err := os.WriteFile("/tmp/other.img", make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	a.cli("receive", "fourth-vol", "--from", b.id, "--image", "/tmp/fourth.img", "--size", "1M") // rebuilds the receiver
	t0 = time.Now()
	// A new file at the path is another image: its replica starts empty
	// and status says so, naming the fix, until it is whole again or the
	// receive is removed.
	waitHealth(t, a, "other-vol: its replica was reset to empty")
	back := time.Since(t0).Round(time.Second)
	a.cli("receive", "remove", "other-vol")
	waitNoProblems(t, a)
	rows = append(rows, w.row("receive image cannot be opened", seen, fmt.Sprintf("that receive alone is off; served again %s after the image was back (as a new, empty replica, status says so); clear once the receive was removed", back)))

	// 6. The state directory's file system fills up.
	w.phase("state dir full")
	// The stopping replicator reads the mirror's dm status, as its status
	// poll may at any moment of the restart: that ioctl waits in the
	// kernel for the log server, which must still be serving.
	touch(t, filepath.Join(stateA, "test-status-on-stop"))
	filler := fillDir(t, stateA)
	seen = waitHealth(t, a, "state store failed")
	seen += statusNames(g, a, "store")
	time.Sleep(3 * time.Second) // writes go on, served from memory
	os.Remove(filler)
	t0 = time.Now()
	waitHealthNot(t, a, "store") // dmsyncd re-execs itself and resyncs in full
	rows = append(rows, w.row("state dir full (tmpfs)", seen, fmt.Sprintf("served from memory; restarted itself %s after space was freed, every region resent", time.Since(t0).Round(time.Second))))
	// How the restart went, from the daemon's own log: a replicator that
	// was slow to stop has its stacks there.
	hooked := false
	for _, l := range strings.Split(a.d.Log(), "\n") {
		for _, k := range []string{"log server stopping", "connector closed", "ignored SIGTERM", "replicator killed", "still stopping", "starting again", "status while stopping"} {
			if strings.Contains(l, k) {
				t.Logf("restart: %s", l)
			}
		}
		if strings.Contains(l, "status while stopping") {
			hooked = true
			if strings.Contains(l, "err=") && !strings.Contains(l, "err=<nil>") {
				t.Errorf("the stopping replicator's dm status failed: %s", l)
			}
		}
		if strings.Contains(l, "ignored SIGTERM") {
			t.Errorf("the replicator did not stop within its grace on the restart: %s", l)
		}
	}
	if !hooked {
		t.Error("the stopping replicator never read the mirror's dm status (test hook test-status-on-stop)")
	}
	settle("state dir full")

	fmt.Println("============ dmsync daemon faults (writer on ext4 on A's mirror throughout) ============")
	fmt.Printf("%-32s | %-13s | %s | %s\n", "fault", "longest stall", "what the operator sees", "how it recovers")
	for _, r := range rows {
		fmt.Printf("%-32s | %-13s | %s | %s\n", r.fault, r.stall.Round(time.Millisecond), trunc(r.seen, 200), r.recovery)
	}
	fmt.Printf("writes: %d, longest stall outside the faults: %v\n", w.count(), w.stallOf("").Round(time.Millisecond))
}

type faultRow struct {
	fault    string
	stall    time.Duration
	seen     string
	recovery string
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// startHooked starts the node's dmsyncd with the fault-test hooks armed.
func startHooked(t *testing.T, n *node) {
	t.Helper()
	n.d = n.g.StartDaemon(guesttest.DaemonOptions{
		StateDir: n.dir, NetNS: n.netns, Args: append([]string{"--admin-socket", n.socket}, n.args...),
		Env: []string{"DMSYNCD_TEST_HOOKS=1"},
	})
	waitHealth(t, n, "replicator up")
}

// restartReplicator makes A's replicator panic once (test hook) so that it
// starts again and reads its configuration anew.
func restartReplicator(t *testing.T, n *node, stateDir string) {
	t.Helper()
	now := filepath.Join(stateDir, "test-panic-now")
	touch(t, now)
	waitHealth(t, n, "replicator down")
	os.Remove(now)
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// health asks the node's admin socket (the replicator, or the log server
// while the replicator is down) for the daemon's health.
func health(n *node) (*logpb.HealthResponse, error) {
	conn, err := grpc.NewClient("passthrough:///dmsyncd", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.socket)
		}))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return logpb.NewDaemonClient(conn).Health(ctx, &logpb.HealthRequest{})
}

func healthText(h *logpb.HealthResponse) string {
	var b strings.Builder
	b.WriteString(h.GetSummary())
	for _, p := range h.GetProblems() {
		fmt.Fprintf(&b, "\n  %s: %s", p.GetComponent(), p.GetMessage())
	}
	return b.String()
}

// waitHealth waits until the health names want and returns the problem
// line (or summary) that does.
func waitHealth(t *testing.T, n *node, want string) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		h, err := health(n)
		if err != nil {
			last = err.Error()
			continue
		}
		last = healthText(h)
		for _, p := range h.GetProblems() {
			if strings.Contains(p.GetMessage(), want) {
				return p.GetComponent() + ": " + p.GetMessage()
			}
		}
		if strings.Contains(h.GetSummary(), want) {
			return h.GetSummary()
		}
	}
	t.Fatalf("dmsyncd %s: health never said %q; last:\n%s\n%s", n.name, want, last, n.d.Log())
	return ""
}

// waitHealthNot waits until no problem mentions what (and the replicator is up).
func waitHealthNot(t *testing.T, n *node, what string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		h, err := health(n)
		if err != nil {
			last = err.Error()
			continue
		}
		last = healthText(h)
		ok := h.GetReplicatorUp()
		for _, p := range h.GetProblems() {
			if strings.Contains(p.GetComponent()+": "+p.GetMessage(), what) {
				ok = false
			}
		}
		if ok {
			return
		}
	}
	t.Fatalf("dmsyncd %s: %q never cleared; last:\n%s\n%s", n.name, what, last, n.d.Log())
}

func waitNoProblems(t *testing.T, n *node) { t.Helper(); waitHealthNot(t, n, "") }

// status runs `dmsync status` and returns its output (or error text).
func status(g *guesttest.G, n *node) string {
	out, err := g.Try(g.Bin("dmsync"), "--socket", n.socket, "status")
	if err != nil {
		return out + "\n" + err.Error()
	}
	return out
}

// statusNames polls `dmsync status` for up to 20 s for want and says in a
// few words whether it named the fault (the daemon's health always does;
// how the CLI shows it is the CLI's).
func statusNames(g *guesttest.G, n *node, want string) string {
	var st string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if st = status(g, n); strings.Contains(st, want) {
			fmt.Printf("dmsync status names %q:\n%s\n", want, st)
			return " [dmsync status names it]"
		}
	}
	fmt.Printf("dmsync status does not name %q:\n%s\n", want, st)
	return " [dmsync status does not name it]"
}

// fillDir writes a file into dir until its file system is full.
func fillDir(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{1 << 20, 4096} {
		buf := make([]byte, n)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	return p
}

// sameDevices compares the volume and the replica byte for byte (O_DIRECT).
func sameDevices(t *testing.T, a, b string, size int64, step string) {
	t.Helper()
	for off := int64(0); off < size; off += 4 << 20 {
		x, err := guesttest.ReadDirect(a, off, 4<<20)
		if err != nil {
			t.Fatal(err)
		}
		y, err := guesttest.ReadDirect(b, off, 4<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Fatalf("%s: replica differs from the volume in [%d, %d) after dmsync wait said nothing is pending", step, off, off+4<<20)
		}
	}
	fmt.Printf("%s: replica equals the volume\n", step)
}

// writer writes 4 KiB at random offsets of a file and fdatasyncs each,
// timing every write; the longest time per phase is the I/O stall.
type writer struct {
	t    *testing.T
	path string

	mu     sync.Mutex
	cur    string
	stalls map[string]time.Duration
	n      int
	paused bool
	idle   chan struct{} // the loop closed its file while paused
	wake   chan struct{}
	done   chan struct{}
	quit   chan struct{}
}

func startWriter(t *testing.T, path string) *writer {
	w := &writer{t: t, path: path, stalls: map[string]time.Duration{}, wake: make(chan struct{}, 1), idle: make(chan struct{}, 1),
		done: make(chan struct{}), quit: make(chan struct{})}
	go w.loop()
	return w
}

const writerFile = 8 << 20

func (w *writer) loop() {
	defer close(w.done)
	buf := make([]byte, 4096)
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for {
		select {
		case <-w.quit:
			return
		default:
		}
		w.mu.Lock()
		paused := w.paused
		w.mu.Unlock()
		if paused {
			if f != nil {
				f.Close()
				f = nil
			}
			select {
			case w.idle <- struct{}{}:
			default:
			}
			select {
			case <-w.wake:
			case <-w.quit:
				return
			}
			continue
		}
		if f == nil {
			var err error
			if f, err = os.OpenFile(w.path, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
				w.t.Errorf("writer: %v", err)
				return
			}
		}
		off, _ := rand.Int(rand.Reader, big.NewInt(writerFile/4096))
		rand.Read(buf)
		t0 := time.Now()
		_, err := f.WriteAt(buf, off.Int64()*4096)
		if err == nil {
			err = unix.Fdatasync(int(f.Fd()))
		}
		d := time.Since(t0)
		if err != nil {
			w.t.Errorf("writer: %v", err)
			return
		}
		w.mu.Lock()
		w.n++
		w.stalls[w.cur] = max(w.stalls[w.cur], d)
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

// phase starts attributing stalls to a fault.
func (w *writer) phase(name string) {
	w.mu.Lock()
	w.cur = name
	w.mu.Unlock()
}

// row ends the current phase and returns its table row.
func (w *writer) row(fault, seen, recovery string) faultRow {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := faultRow{fault: fault, stall: w.stalls[w.cur], seen: seen, recovery: recovery}
	return r
}

func (w *writer) stallOf(phase string) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stalls[phase]
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// pause closes the writer's file (so the file system can be remounted
// read-only) and waits for it to idle; resume starts it again.
func (w *writer) pause() {
	select {
	case <-w.idle:
	default:
	}
	w.mu.Lock()
	w.paused = true
	w.mu.Unlock()
	select {
	case <-w.idle:
	case <-w.done:
	case <-time.After(2 * time.Minute):
		w.t.Fatal("writer did not pause: a write has been stuck for 2 minutes")
	}
}

func (w *writer) resume() {
	w.mu.Lock()
	w.paused = false
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *writer) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}
