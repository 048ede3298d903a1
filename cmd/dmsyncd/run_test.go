package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/kerneltest"
)

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	for _, args := range [][]string{{"--bogus"}, {"--log-level", "loud"}, {"extra"}, {"--state-dir", ""}} {
		err := run(context.Background(), args, io.Discard, &stderr)
		if !errors.Is(err, errUsage) || exitCode(err) != exitUsage {
			t.Errorf("%q: %v", args, err)
		}
	}
	if c, err := parseFlags(nil, &stderr); err != nil || c.stateDir != "/var/lib/dmsync" || c.logLevel != slog.LevelInfo {
		t.Errorf("defaults %+v %v", c, err)
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

func TestDaemonWithFakeKernel(t *testing.T) {
	dir := t.TempDir()
	l, sock := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	cfg := config{stateDir: dir}
	log := slog.New(slog.DiscardHandler)
	serveOnce := func(f func(k *kerneltest.Kernel, d *daemon)) {
		d, err := openDaemon(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		defer d.close()
		k := kerneltest.New()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.serve(ctx, func() (logd.Conn, error) { return k.Conn(), nil }) }()
		if msg := readNotify(t, l); !strings.HasPrefix(msg, "READY=1") {
			t.Fatalf("notify %q", msg)
		}
		f(k, d)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("serve: %v", err)
		}
		if msg := readNotify(t, l); msg != "STOPPING=1" {
			t.Fatalf("notify %q", msg)
		}
	}
	ctx := context.Background()
	serveOnce(func(k *kerneltest.Kernel, d *daemon) {
		if _, err := k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("4096 core 8 nosync")); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Do(ctx, "vol", 1, logd.ReqFlush, logd.AppendRegions(nil, 9)); err != nil {
			t.Fatal(err)
		}
	})
	serveOnce(func(k *kerneltest.Kernel, d *daemon) {
		p, err := d.Replicator().Pending("vol")
		if err != nil || len(p) != 1 || p[0].Region != 9 {
			t.Fatalf("after restart: %v %v", p, err)
		}
	})
}

// The tests below run the real binary's main (this test binary re-executed)
// against the host's netlink connector; they skip where it cannot bind.

func TestMain(m *testing.M) {
	if os.Getenv("DMSYNCD_TEST_MAIN") == "1" {
		os.Args = append([]string{"dmsyncd"}, strings.Fields(os.Getenv("DMSYNCD_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

func startMain(t *testing.T, dir, notify string) (*exec.Cmd, *bytes.Buffer) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "DMSYNCD_TEST_MAIN=1", "DMSYNCD_TEST_ARGS=--state-dir "+dir, "NOTIFY_SOCKET="+notify)
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
