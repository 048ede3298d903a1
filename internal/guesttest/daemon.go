package guesttest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DaemonOptions say how to run a dmsyncd in the guest.
type DaemonOptions struct {
	// StateDir is its --state-dir (default: a fresh temporary directory).
	StateDir string
	// Args are further flags (e.g. --listen, --admin-socket).
	Args []string
	// NetNS, if set, runs it in that network namespace (ip netns exec).
	NetNS string
	// Echo, if set, also receives its log as it is written.
	Echo io.Writer
	// Env are extra environment variables (NAME=value).
	Env []string
}

// Daemon is a dmsyncd process started by StartDaemon.
type Daemon struct {
	g        *G
	cmd      *exec.Cmd
	log      syncBuffer
	StateDir string
}

// StartDaemon runs dmsyncd and waits until it reports READY=1 to its
// notify socket (as systemd's Type=notify would). The daemon is stopped
// with SIGTERM when the test ends, and its log is printed if the test
// failed.
func (g *G) StartDaemon(o DaemonOptions) *Daemon {
	g.t.Helper()
	if o.StateDir == "" {
		o.StateDir = g.t.TempDir()
	}
	notify := filepath.Join(g.t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		g.t.Fatal(err)
	}
	defer l.Close()
	d := &Daemon{g: g, StateDir: o.StateDir}
	argv := append([]string{g.Bin("dmsyncd"), "--state-dir", o.StateDir}, o.Args...)
	if o.NetNS != "" {
		argv = append([]string{"ip", "netns", "exec", o.NetNS}, argv...)
	}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	// After a kill -9 of the log server its replicator may sit in a read
	// of the mirror that only a log server can finish (the kernel asks it
	// IN_SYNC): Wait must not wait for the pipes the replicator holds.
	d.cmd.WaitDelay = 2 * time.Second
	d.cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="+notify), o.Env...)
	var w io.Writer = &d.log
	if o.Echo != nil {
		w = io.MultiWriter(&d.log, o.Echo)
	}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	if err := d.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() {
		d.stop()
		if g.t.Failed() {
			g.t.Logf("dmsyncd (%s) log:\n%s", o.StateDir, d.Log())
		}
	})
	l.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 256)
	n, _, err := l.ReadFromUnix(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "READY=1") {
		g.t.Fatalf("dmsyncd not ready: %q %v\n%s", buf[:n], err, d.Log())
	}
	return d
}

// PID returns the daemon's process id (in a network namespace too: `ip
// netns exec` execs it in place).
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Log returns what the daemon wrote so far.
func (d *Daemon) Log() string { return d.log.String() }

// Stop sends SIGTERM and fails the test unless the daemon exits cleanly
// within 30 seconds.
func (d *Daemon) Stop() {
	d.g.t.Helper()
	if err := d.stop(); err != nil {
		d.g.t.Fatalf("dmsyncd: %v\n%s", err, d.Log())
	}
}

func (d *Daemon) stop() error {
	if d.cmd.ProcessState != nil {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("exit after SIGTERM: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-done
		return errors.New("ignored SIGTERM for 30s")
	}
}

// Kill9 kills the daemon without warning, as a crash would.
func (d *Daemon) Kill9() {
	if d.cmd.ProcessState == nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
