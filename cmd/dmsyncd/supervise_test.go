package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/kerneltest"
)

func TestExitReason(t *testing.T) {
	stack := strings.Repeat("goroutine 7 [running]:\n\tmain.f()\n", 2000)
	for _, tc := range []struct {
		name, stderr string
		err          error
		want         string
	}{
		{"panic with a long stack", "level=INFO msg=x\npanic: test hook\n\n" + stack, errors.New("exit status 2"), "panic: test hook (exit status 2)"},
		{"runtime fatal error", "fatal error: concurrent map writes\n" + stack + "panic: later\n", errors.New("exit status 2"), "fatal error: concurrent map writes (exit status 2)"},
		{"error on exit", "level=ERROR msg=y\ndmsyncd: replica store: full\n", errors.New("exit status 1"), "replica store: full (exit status 1)"},
		{"killed", "level=INFO msg=z\n", errors.New("signal: killed"), "signal: killed"},
		{"clean", "", nil, "exited cleanly"},
	} {
		var l lastLines
		// Written in odd pieces, as a pipe delivers it.
		for s := tc.stderr; s != ""; {
			n := min(len(s), 777)
			l.Write([]byte(s[:n]))
			s = s[n:]
		}
		if got := exitReason(tc.err, l.String()); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The log server answers the kernel until the replicator has exited: a
// stopping replicator may be in a dm status ioctl, which waits in the
// kernel for the log server's answer (and cannot be killed meanwhile).
func TestServeAnswersUntilReplicatorExits(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	cfg := testConfig(t)
	log := &syncBuf{}
	d, err := openDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	k := kerneltest.New()
	// The replicator: a process that, once SIGTERM ended it, still waits
	// for one answer of the log server before it counts as exited.
	answered := make(chan error, 1)
	d.spawn = func(ctx context.Context, _ []*os.File, _ io.Writer) (*child, error) {
		cmd := exec.Command(sleep, "60")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		c := &child{cmd: cmd, tail: &lastLines{}, done: make(chan error, 1)}
		go func() {
			err := cmd.Wait()
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, rerr := k.Request(rctx, "status-while-stopping", 1, logd.ReqStatusInfo, nil)
			answered <- rerr
			c.done <- err
		}()
		return c, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.serve(ctx, func() (logd.Conn, error) { return k.Conn(), nil }) }()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(log.String(), "replicator started"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the replicator never started:\n%s", log)
		}
	}
	cancel()
	if err := <-answered; err != nil {
		t.Errorf("a request sent while the replicator stopped: %v (the log server stopped serving first)", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v\n%s", err, log)
	}
}
