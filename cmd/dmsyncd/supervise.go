package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/logd/logapi"
	"github.com/dmsync/dmsync/logd/logpb"
)

// Restart backoff of the replicator.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
	// stableRun resets the backoff: a replicator that ran this long was
	// not crash-looping (a crash loop fails within seconds of each start;
	// one killed every half minute is not one, and waits only minBackoff).
	stableRun = 15 * time.Second
	// stopGrace is how long the replicator gets after SIGTERM.
	stopGrace = 10 * time.Second
	// killWait is how long the log server waits for a killed replicator.
	killWait = 5 * time.Second
)

// child is a running replicator process.
type child struct {
	cmd  *exec.Cmd
	tail *lastLines // its stderr's last panic or error line, for the exit reason
	done chan error
}

// spawnReplicator starts this binary as the replicator with the daemon's
// own flags. extra are passed as fds 3, 4, ...
func spawnReplicator(_ context.Context, extra []*os.File, stderr io.Writer, args []string) (*child, error) {
	cmd := exec.Command("/proc/self/exe", append([]string{childRole}, args...)...)
	cmd.Env = childEnv()
	cmd.ExtraFiles = extra
	// Never outlive the log server. Pdeathsig fires when the thread that
	// forked exits; the supervisor's goroutine is locked to its thread.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Once it exited, stop waiting for its output within a moment: a
	// process it started may still hold its stderr, and the log server
	// must not wait on that.
	cmd.WaitDelay = time.Second
	c := &child{cmd: cmd, tail: &lastLines{}, done: make(chan error, 1)}
	cmd.Stdout = stderr
	cmd.Stderr = io.MultiWriter(stderr, c.tail)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start replicator: %w", err)
	}
	go func() { c.done <- cmd.Wait() }()
	return c, nil
}

// childEnv is the environment without systemd's notify and watchdog
// variables: only the log server talks to systemd.
func childEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "NOTIFY_SOCKET=") || strings.HasPrefix(e, "WATCHDOG_") {
			continue
		}
		env = append(env, e)
	}
	return env
}

// supervisor keeps the replicator running.
type supervisor struct {
	d *daemon
}

func (s *supervisor) run(ctx context.Context) {
	d := s.d
	// Pdeathsig is tied to the forking thread: keep it alive.
	lockThread()
	if err := migrateReplicaState(d, ctx); err != nil {
		d.log.Error("could not move replica state out of the dirty log's store; replicas will be rebuilt", "err", err)
	}
	var extra []*os.File
	if d.adminLn != nil {
		f, err := d.adminLn.File()
		if err != nil {
			d.log.Error("admin socket: cannot hand it to the replicator", "err", err)
		} else {
			defer f.Close()
			extra = append(extra, f)
		}
	}
	fb := newFallback(d)
	backoff := minBackoff
	for ctx.Err() == nil {
		start := time.Now()
		c, err := d.spawn(ctx, extra, d.childStderr)
		var reason string
		restartNow := false
		if err != nil {
			reason = err.Error()
		} else {
			d.health.replicatorUp(c.cmd.Process.Pid)
			d.log.Info("replicator started", "pid", c.cmd.Process.Pid)
			select {
			case err = <-c.done:
			case <-ctx.Done():
				stopChild(c, d)
				d.freezer.releaseAll("the replicator stopped")
				return
			}
			reason = exitReason(err, c.tail.String())
			d.freezer.releaseAll("the replicator exited")
			restartNow = exitStatus(err) == exitRestart
		}
		if time.Since(start) > stableRun {
			backoff = minBackoff
		}
		wait := backoff
		if restartNow {
			wait = 0
			d.log.Info("replicator restarts to apply a fixed configuration")
		} else {
			d.log.Error("replicator exited; the dirty log is still served", "reason", reason,
				"ran", time.Since(start).Round(time.Millisecond), "restart_in", wait)
			backoff = min(2*backoff, maxBackoff)
		}
		d.health.replicatorDown(fmt.Sprintf("down: %s, restarting in %s", reason, wait))
		fb.serveFor(ctx, wait)
	}
}

// stopChild sends SIGTERM and waits stopGrace before SIGKILL.
func stopChild(c *child, d *daemon) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		if err != nil && !isSignal(err, syscall.SIGTERM) {
			d.log.Warn("replicator stopped", "reason", exitReason(err, c.tail.String()))
		}
	case <-time.After(stopGrace):
		d.log.Error("replicator ignored SIGTERM; killing it", "grace", stopGrace)
		_ = c.cmd.Process.Kill()
		select {
		case err := <-c.done:
			d.log.Warn("replicator killed", "reason", exitReason(err, c.tail.String()))
		case <-time.After(killWait):
			// Blocked in the kernel (D state): a SIGKILL is delivered
			// when its system call returns. The log server stops anyway;
			// Pdeathsig and the pending SIGKILL end it later.
			d.log.Error("replicator did not exit after SIGKILL: it is blocked in the kernel; stopping without it", "waited", killWait)
		}
	}
}

func isSignal(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal() == sig
		}
	}
	return false
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// exitReason is one line saying why the replicator exited: its panic or
// its last error line if it left one, then the exit status.
func exitReason(err error, last string) string {
	status := "exited cleanly"
	if err != nil {
		status = err.Error()
	}
	if last != "" {
		return last + " (" + status + ")"
	}
	return status
}

// fallback answers the admin socket while the replicator is down: Health
// with the daemon's state, every other call with why it cannot be served.
type fallback struct {
	d  *daemon
	ln *pausableListener
}

func newFallback(d *daemon) *fallback {
	if d.adminLn == nil {
		return &fallback{d: d}
	}
	return &fallback{d: d, ln: &pausableListener{ln: d.adminLn}}
}

// serveFor serves the admin socket for wait (or until ctx is done).
func (f *fallback) serveFor(ctx context.Context, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	if f.ln == nil || wait == 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return
	}
	g := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		h := f.d.health.snapshot()
		return status.Error(codes.FailedPrecondition, "dmsyncd serves the dirty log, but this needs its replicator: "+
			replicatorProblem(h)+" (see `journalctl -u dmsyncd`)")
	}))
	logapi.RegisterDaemon(g, func(context.Context) (*logpb.HealthResponse, error) { return f.d.health.snapshot(), nil })
	if err := f.ln.resume(); err != nil {
		f.d.log.Error("admin socket: cannot serve it while the replicator is down", "err", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(f.ln)
	}()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	g.Stop() // pauses f.ln: the replicator accepts from now on
	<-done
}

func replicatorProblem(h *logpb.HealthResponse) string {
	for _, p := range h.GetProblems() {
		if p.GetComponent() == "replicator" {
			return p.GetMessage()
		}
	}
	return "replicator is down"
}

// pausableListener lets the log server accept on the admin socket while
// the replicator is down without ever closing the socket: Close only
// interrupts Accept (a deadline in the past).
type pausableListener struct {
	ln     *net.UnixListener
	mu     sync.Mutex
	paused bool
}

// resume lets Accept work again. The socket is shared with the replicator
// (same open file description), and starting it (os/exec calls File.Fd)
// turns the description blocking, which would make Accept ignore its
// deadline: make it non-blocking again first.
func (p *pausableListener) resume() error {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	raw, err := p.ln.SyscallConn()
	if err != nil {
		return err
	}
	var nbErr error
	if err := raw.Control(func(fd uintptr) { nbErr = unix.SetNonblock(int(fd), true) }); err != nil {
		return err
	}
	if nbErr != nil {
		return nbErr
	}
	return p.ln.SetDeadline(time.Time{})
}

func (p *pausableListener) Accept() (net.Conn, error) {
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if paused {
		return nil, net.ErrClosed
	}
	c, err := p.ln.Accept()
	if err != nil {
		p.mu.Lock()
		paused = p.paused
		p.mu.Unlock()
		if paused {
			return nil, net.ErrClosed
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, net.ErrClosed
		}
		return nil, err
	}
	return c, nil
}

func (p *pausableListener) Close() error {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	return p.ln.SetDeadline(time.Unix(1, 0))
}

func (p *pausableListener) Addr() net.Addr { return p.ln.Addr() }

// lastLines watches the replicator's stderr for the line that says why it
// exits: "panic: ...", "fatal error: ..." (a Go runtime crash) or
// "dmsyncd: ..." (its error on exit). A panic line is kept over the stack
// dump that follows it.
type lastLines struct {
	mu      sync.Mutex
	partial []byte
	last    string
	isPanic bool
}

func (l *lastLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		switch {
		case strings.HasPrefix(line, "panic: "), strings.HasPrefix(line, "fatal error: "):
			if !l.isPanic {
				l.last, l.isPanic = line, true
			}
		case strings.HasPrefix(line, "dmsyncd: ") && !l.isPanic:
			l.last = strings.TrimPrefix(line, "dmsyncd: ")
		}
	}
	if len(l.partial) > 4096 { // a line that long is no reason line
		l.partial = l.partial[:0]
	}
	return len(p), nil
}

func (l *lastLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}
