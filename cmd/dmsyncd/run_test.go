package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/kerneltest"
	"github.com/dmsync/dmsync/logd/logapi"
	"github.com/dmsync/dmsync/logd/logpb"
)

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	for _, args := range [][]string{{"--bogus"}, {"--log-level", "loud"}, {"extra"}, {"--state-dir", ""}, {"--chunking", "rabin"}, {"--scrub-max-rate", "0"}, {"--scrub-max-rate", "-5"}} {
		err := run(context.Background(), args, io.Discard, &stderr)
		if !errors.Is(err, errUsage) || exitCode(err) != exitUsage {
			t.Errorf("%q: %v", args, err)
		}
	}
	if c, err := parseFlags(nil, &stderr); err != nil || c.stateDir != "/var/lib/dmsync" || c.logLevel != slog.LevelInfo || c.chunking != "fixed" || c.scrubRate != 200 {
		t.Errorf("defaults %+v %v", c, err)
	}
	if c, err := parseFlags([]string{"--chunking", "cdc"}, &stderr); err != nil || c.chunking != "cdc" {
		t.Errorf("--chunking cdc: %+v %v", c, err)
	}
	if c, err := parseFlags([]string{"--scrub-max-rate", "40"}, &stderr); err != nil || c.scrubRate != 40 {
		t.Errorf("--scrub-max-rate 40: %+v %v", c, err)
	}
}

// notifyListener stands in for systemd's notification socket.
func notifyListener(t *testing.T) (*net.UnixConn, string) {
	path := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Skipf("no unixgram sockets: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func readNotify(t *testing.T, l *net.UnixConn) string {
	t.Helper()
	l.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 512)
	n, _, err := l.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("no sd_notify message: %v", err)
	}
	return string(buf[:n])
}

// testConfig is a daemon config in a temporary directory: its own admin
// socket and connector lock.
func testConfig(t *testing.T, extra ...string) config {
	t.Helper()
	return testConfigAt(t, t.TempDir(), extra...)
}

// testConfigAt is testConfig with the state dir at dir; the sockets and
// locks stay in a temporary directory of their own.
func testConfigAt(t *testing.T, dir string, extra ...string) config {
	t.Helper()
	run := t.TempDir()
	args := append([]string{"--state-dir", dir, "--admin-socket", filepath.Join(run, "admin.sock"),
		"--connector-lock", filepath.Join(run, "connector.lock")}, extra...)
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// served is a daemon serving a fake kernel (its replicator is this test
// binary re-executed, see TestMain).
type served struct {
	d      *daemon
	k      *kerneltest.Kernel
	cancel func()
	done   chan error
	log    *syncBuf
}

func serveDaemon(t *testing.T, cfg config, l *net.UnixConn) *served {
	t.Helper()
	log := &syncBuf{}
	d, err := openDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	d.childStderr = log
	s := &served{d: d, k: kerneltest.New(), done: make(chan error, 1), log: log}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- d.serve(ctx, func() (logd.Conn, error) { return s.k.Conn(), nil }) }()
	for { // skip what an earlier daemon left (STATUS=, STOPPING=1)
		msg := readNotify(t, l)
		if strings.HasPrefix(msg, "READY=1") {
			return s
		}
		if !strings.HasPrefix(msg, "STATUS=") && msg != "STOPPING=1" && msg != "WATCHDOG=1" {
			t.Fatalf("notify %q\n%s", msg, log)
		}
	}
}

func (s *served) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	if err := <-s.done; err != nil {
		t.Fatalf("serve: %v\n%s", err, s.log)
	}
	s.d.close()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestDaemonWithFakeKernel(t *testing.T) {
	l, sock := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	cfg := testConfig(t)
	ctx := context.Background()
	s := serveDaemon(t, cfg, l)
	if _, err := s.k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("4096 core 8 nosync")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.k.Do(ctx, "vol", 1, logd.ReqFlush, logd.AppendRegions(nil, 9)); err != nil {
		t.Fatal(err)
	}
	s.stop(t)
	for {
		if msg := readNotify(t, l); msg == "STOPPING=1" {
			break
		}
	}
	s = serveDaemon(t, cfg, l)
	p, err := s.d.Replicator().Pending("vol")
	if err != nil || len(p) != 1 || p[0].Region != 9 {
		t.Fatalf("after restart: %v %v", p, err)
	}
	// The replicator sees the same log through the local API.
	c, err := logapi.Dial(filepath.Join(cfg.stateDir, logSocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p, err := c.Pending("vol"); err != nil || len(p) != 1 || p[0].Region != 9 {
		t.Fatalf("over the local API: %v %v", p, err)
	}
	s.stop(t)
}

// askHealth asks the daemon's admin socket for its health (answered by the
// replicator, or by the log server while the replicator is down).
func askHealth(t *testing.T, cfg config) *logpb.HealthResponse {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///x", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", cfg.adminSocket)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := logpb.NewDaemonClient(conn).Health(ctx, &logpb.HealthRequest{})
	if err != nil {
		return &logpb.HealthResponse{Summary: "health call failed: " + err.Error()}
	}
	return h
}

// waitHealth polls until the summary contains want.
func waitHealth(t *testing.T, cfg config, want string, s *served) *logpb.HealthResponse {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h := askHealth(t, cfg)
		if strings.Contains(h.GetSummary(), want) {
			return h
		}
		for _, p := range h.GetProblems() {
			if strings.Contains(p.GetMessage(), want) {
				return h
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never said %q; last: %s %v\n%s", want, h.GetSummary(), h.GetProblems(), s.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kernelAnswers fails the test unless the log server answers a MARK+FLUSH
// within a second.
func kernelAnswers(t *testing.T, s *served, region uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.k.Do(ctx, "vol", 1, logd.ReqFlush, logd.AppendRegions(nil, region)); err != nil {
		t.Fatalf("the log server did not answer the kernel: %v\n%s", err, s.log)
	}
}

// TestReplicatorPanicIsIsolated: a panic in replication code kills the
// replicator only; the log server answers the kernel throughout, reports
// the exit with its reason, and starts the replicator again.
func TestReplicatorPanicIsIsolated(t *testing.T) {
	l, sock := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("DMSYNCD_TEST_HOOKS", "1")
	cfg := testConfig(t)
	s := serveDaemon(t, cfg, l)
	defer s.stop(t)
	ctx := context.Background()
	if _, err := s.k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("4096 core 8 nosync")); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, cfg, "replicator up", s)
	// A test-only hook in the replicator panics in a goroutine of its own
	// (no recover) while the trigger file exists.
	if err := os.WriteFile(filepath.Join(cfg.stateDir, "test-panic-now"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := waitHealth(t, cfg, "replicator down: panic: test hook", s)
	kernelAnswers(t, s, 3)
	if h.GetReplicatorUp() {
		t.Fatalf("health says the replicator is up: %v", h)
	}
	// Every other admin call names the fault.
	st := replStatus(t, cfg)
	if !strings.Contains(st, "replicator down: panic: test hook") {
		t.Fatalf("admin call while the replicator is down: %s", st)
	}
	os.Remove(filepath.Join(cfg.stateDir, "test-panic-now"))
	waitHealth(t, cfg, "replicator up", s)
	kernelAnswers(t, s, 4)
	if !strings.Contains(s.log.String(), "replicator exited; the dirty log is still served") {
		t.Fatalf("no error line for the exit:\n%s", s.log)
	}
}

func replStatus(t *testing.T, cfg config) string {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///x", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", cfg.adminSocket)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = adminpb.NewReplicationClient(conn).Status(ctx, &adminpb.StatusRequest{})
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// TestReplicatorFaultsFailAlone: a bad node key, a truncated config.json
// and a taken listen port each show in the health call and in the admin
// API, the log server answers the kernel throughout, and fixing each fault
// brings replication back without a restart of the daemon.
func TestReplicatorFaultsFailAlone(t *testing.T) {
	l, sock := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no TCP: %v", err)
	}
	defer taken.Close()
	cfg := testConfig(t, "--listen", taken.Addr().String())
	keyPath := filepath.Join(cfg.stateDir, identity.KeyFile)
	if err := os.WriteFile(keyPath, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.stateDir, identity.CertFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(cfg.stateDir, "config.json")
	if err := os.WriteFile(cfgPath, []byte(`{"peers": [`), 0o600); err != nil { // truncated
		t.Fatal(err)
	}
	s := serveDaemon(t, cfg, l)
	defer s.stop(t)
	ctx := context.Background()
	if _, err := s.k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("4096 core 8 nosync")); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, cfg, "node key", s)
	if st := replStatus(t, cfg); !strings.Contains(st, "replication is off") || !strings.Contains(st, "node key") {
		t.Fatalf("status with a corrupt node key: %s", st)
	}
	kernelAnswers(t, s, 1)

	// A good key: the replicator finds the truncated config.json next.
	os.Remove(keyPath)
	os.Remove(filepath.Join(cfg.stateDir, identity.CertFile))
	if _, err := identity.Init(cfg.stateDir); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, cfg, "config.json", s)
	if st := replStatus(t, cfg); !strings.Contains(st, "replication is off") || !strings.Contains(st, "config.json") {
		t.Fatalf("status with a truncated config.json: %s", st)
	}
	kernelAnswers(t, s, 2)

	// Fixed: the replicator restarts with replication, and meets the
	// taken port; everything else works.
	if err := os.WriteFile(cfgPath, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, cfg, "address already in use", s)
	kernelAnswers(t, s, 3)
	if st := replStatus(t, cfg); st != "ok" {
		t.Fatalf("replication status with only the receiver failing: %s", st)
	}
	taken.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		h := askHealth(t, cfg)
		if len(h.GetProblems()) == 0 && h.GetReplicatorUp() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("problems stay after the port was freed: %v\n%s", h, s.log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	kernelAnswers(t, s, 4)
}

// The tests below run the real binary's main (this test binary re-executed)
// against the host's netlink connector; they skip where it cannot bind.

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childRole {
		main() // the replicator, started by the daemon under test
		return
	}
	if args := os.Getenv("DMSYNCD_TEST_PENDING"); args != "" {
		// A fresh process opens the state (as a restart would) and reports
		// the volume's pending regions and the fail flag.
		cfg, err := parseFlags(strings.Fields(args), os.Stderr)
		if err == nil {
			var d *daemon
			if d, err = openDaemon(context.Background(), cfg, slog.New(slog.DiscardHandler)); err == nil {
				p, _ := d.logd.Pending("vol")
				set, _ := d.flag.IsSet()
				fmt.Printf("pending=%d flag=%v\n", len(p), set)
				d.close()
			}
		}
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv("DMSYNCD_TEST_MAIN") == "1" {
		os.Args = append([]string{"dmsyncd"}, strings.Fields(os.Getenv("DMSYNCD_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

func startMain(t *testing.T, dir, notify string) (*exec.Cmd, *bytes.Buffer) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "DMSYNCD_TEST_MAIN=1", "DMSYNCD_TEST_ARGS=--state-dir "+dir+" --admin-socket "+dir+"/admin.sock --connector-lock "+dir+"/connector.lock", "NOTIFY_SOCKET="+notify)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stderr
}

func TestBinarySingleInstanceAndSIGTERM(t *testing.T) {
	if _, err := logd.DialConnector(); err != nil {
		t.Skipf("needs the netlink connector (root): %v", err)
	}
	dir := t.TempDir()
	l, sock := notifyListener(t)
	first, firstErr := startMain(t, dir, sock)
	if msg := readNotify(t, l); !strings.HasPrefix(msg, "READY=1") {
		t.Fatalf("notify %q (stderr %s)", msg, firstErr)
	}
	second, secondErr := startMain(t, dir, sock)
	err := second.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitError ||
		!strings.Contains(secondErr.String(), "pid "+strconv.Itoa(first.Process.Pid)) {
		t.Fatalf("second instance: %v, stderr %q", err, secondErr)
	}
	// kill -9 frees the lock: a restarted daemon takes over.
	first.Process.Kill()
	first.Wait()
	third, thirdErr := startMain(t, dir, sock)
	if msg := readNotify(t, l); !strings.HasPrefix(msg, "READY=1") {
		t.Fatalf("after kill -9: notify %q (stderr %s)", msg, thirdErr)
	}
	third.Process.Signal(syscall.SIGTERM)
	if err := third.Wait(); err != nil {
		t.Fatalf("SIGTERM exit: %v, stderr %s", err, thirdErr)
	}
	if !strings.Contains(thirdErr.String(), "stopped") {
		t.Fatalf("no clean shutdown log: %s", thirdErr)
	}
}

// TestSingleInstance: a second daemon refuses to start, naming the first,
// when it shares the state dir, the kernel connector or the admin socket;
// the first one's socket stays.
func TestSingleInstance(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	first := testConfig(t)
	d, err := openDaemon(context.Background(), first, log)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	go func() { // something answers on the admin socket
		for {
			c, err := d.adminLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	pid := "pid " + strconv.Itoa(os.Getpid())
	other := testConfig(t)
	for _, tc := range []struct {
		name string
		cfg  config
		want string
	}{
		{"same state dir", first, "another dmsyncd serves " + first.stateDir},
		{"same connector", func() config { c := other; c.connectorLock = first.connectorLock; return c }(), "kernel connector"},
		{"same admin socket", func() config { c := other; c.noConnector = true; c.adminSocket = first.adminSocket; return c }(), "admin socket in use"},
	} {
		_, err := openDaemon(context.Background(), tc.cfg, log)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), pid) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := os.Stat(first.adminSocket); err != nil {
		t.Fatalf("the first daemon's admin socket is gone: %v", err)
	}
}

// TestWatchdogFromLogLoop: with systemd's watchdog on, the log loop pings
// WATCHDOG=1 while it runs, and the pings stop with it.
func TestWatchdogFromLogLoop(t *testing.T) {
	l, sock := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "1500000")
	t.Setenv("WATCHDOG_PID", "")
	cfg := testConfig(t)
	if cfg.watchdog != 1500*time.Millisecond {
		t.Fatalf("watchdog %v", cfg.watchdog)
	}
	s := serveDaemon(t, cfg, l)
	pings := 0
	for deadline := time.Now().Add(10 * time.Second); pings < 2 && time.Now().Before(deadline); {
		if msg := readNotify(t, l); msg == "WATCHDOG=1" {
			pings++
		}
	}
	if pings < 2 {
		t.Fatalf("%d watchdog pings", pings)
	}
	s.stop(t)
	buf := make([]byte, 512)
	for { // what was sent before the stop
		l.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := l.ReadFromUnix(buf); err != nil {
			break
		}
	}
	// Nothing pings once the log loop stopped.
	l.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
	for {
		n, _, err := l.ReadFromUnix(buf)
		if err != nil {
			break
		}
		if string(buf[:n]) == "WATCHDOG=1" {
			t.Fatal("watchdog ping after the log loop stopped")
		}
	}
}
