package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

func TestProgressRendering(t *testing.T) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	p := &progress{w: &buf, tty: true, width: 120, interval: 10 * time.Second, now: func() time.Time { return clock }}
	p.update("data: replicating", 120<<20, 448<<20, 12<<20, 27*time.Second, "syncing")
	p.update("data: replicating", 448<<20, 448<<20, 12<<20, 0, "syncing")
	p.done("data: replicated")
	want := "\rdata: replicating [==========>                             ]  26.8%  120M/448M  12.0M/s  ETA 27s  syncing\x1b[K" +
		"\rdata: replicating [========================================] 100.0%  448M/448M  12.0M/s  syncing\x1b[K" +
		"\r\x1b[Kdata: replicated\n"
	if buf.String() != want {
		t.Fatalf("tty:\n%q\nwant\n%q", buf.String(), want)
	}

	buf.Reset()
	p = &progress{w: &buf, width: 0, interval: 10 * time.Second, now: func() time.Time { return clock }}
	p.update("data: replicating", 0, 448<<20, 0, -1, "peer-unreachable: retrying")
	clock = clock.Add(5 * time.Second)
	p.update("data: replicating", 10<<20, 448<<20, 1<<20, time.Minute, "syncing") // too soon: no line
	clock = clock.Add(5 * time.Second)
	p.update("data: replicating", 20<<20, 448<<20, 2<<20, 3*time.Minute+14*time.Second, "syncing")
	p.done("data: replicated")
	want = "data: replicating:   0.0%  0/448M (peer-unreachable: retrying)\n" +
		"data: replicating:   4.5%  20M/448M  2.00M/s  ETA 3m14s (syncing)\n" +
		"data: replicated\n"
	if buf.String() != want {
		t.Fatalf("plain:\n%q\nwant\n%q", buf.String(), want)
	}
	if strings.ContainsAny(buf.String(), "\r\x1b") {
		t.Fatal("plain output has terminal control characters")
	}
}

// TestWaitProgress runs `dmsync wait` against a peer that is down, on a
// terminal and not: the live line is redrawn with the state, the plain
// lines are whole lines, and the timeout is exit 1 with one line.
func TestWaitProgress(t *testing.T) {
	oldTTY, oldInterval := isTerminal, plainInterval
	defer func() { isTerminal, plainInterval = oldTTY, oldInterval }()
	plainInterval = 300 * time.Millisecond
	a := newEnv(t)
	a.addVolume(t, make([]byte, testSize))
	b := newNodeEnv(t, "") // pinned, but nobody listens at its address
	a.mustRun(t, "peer", "add", b.id.ID, "--addr", freeAddr(t))
	a.mustRun(t, "replicate", "vol", "--to", b.id.ID)
	for _, tty := range []bool{true, false} {
		isTerminal = func(io.Writer) (bool, int) { return tty, 120 }
		out, stderr, code := a.run("wait", "vol", "--timeout", "2500ms")
		if code != exitFailure || !strings.Contains(stderr, "replication not done after 2.5s: 32 regions (2M) of vol still pending") {
			t.Fatalf("tty=%v: exit %d, stderr %q", tty, code, stderr)
		}
		if tty {
			if strings.Count(out, "\r") < 3 || !strings.Contains(out, "vol: replicating [") || !strings.Contains(out, "  0.0%  0/2M") {
				t.Errorf("tty output: %q", out)
			}
			continue
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 3 || strings.ContainsAny(out, "\r\x1b") || !strings.HasPrefix(lines[0], "vol: replicating:   0.0%  0/2M (") {
			t.Errorf("plain output: %q", out)
		}
	}
}

// TestVerifyProgress: verify shows the bytes read while it runs and its
// result after.
func TestVerifyProgress(t *testing.T) {
	oldTTY := isTerminal
	defer func() { isTerminal = oldTTY }()
	isTerminal = func(io.Writer) (bool, int) { return true, 120 }
	b := newNodeEnv(t, freeAddr(t))
	a := newEnv(t)
	a.addVolume(t, bytes.Repeat([]byte{5}, testSize))
	b.mustRun(t, "receive", "vol", "--from", a.id.ID, "--image", b.dir+"/img", "--size", "2M")
	a.mustRun(t, "peer", "add", b.id.ID, "--addr", listenOf(b))
	a.mustRun(t, "replicate", "vol", "--to", b.id.ID, "--wait")
	out := a.mustRun(t, "verify", "vol")
	if !strings.HasSuffix(out, "equal\n") || strings.Contains(out, "\x1b[K\n") {
		t.Fatalf("verify: %q", out)
	}
}
