package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/events"
)

// lockedBuffer is the CLI's stdout while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventsDaemon serves only the Events service over hub on a unix socket.
func eventsDaemon(t *testing.T, hub *events.Hub) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "dmsync.sock")
	ln, err := admin.Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	events.Register(g, hub)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return sock
}

// follow runs `dmsync events ARGS` until want lines are printed.
func follow(t *testing.T, sock string, want int, during func(), args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb lockedBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"--socket", sock, "events"}, args...), &out, &errb) }()
	if during != nil {
		time.Sleep(100 * time.Millisecond) // subscribed by then
		during()
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "\n") < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("dmsync events %v: %v (exit %d) %s", args, err, exitCode(err), errb.String())
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) < want {
		t.Fatalf("dmsync events %v printed %d lines, want %d:\n%s", args, len(lines), want, out.String())
	}
	return lines
}

func TestEventsCommand(t *testing.T) {
	hub := events.NewHub(0)
	hub.Emit(events.LegFailed, "data", "leg 1 (8:32) of data: write-failed")
	hub.Emit(events.PeerDown, "data", "data: peer 6kzp3r… (b:7420) is down: connection refused")
	sock := eventsDaemon(t, hub)

	lines := follow(t, sock, 3, func() { hub.Emit(events.StoreFailed, "", "the dirty log's state store failed: disk full") })
	for i, want := range []string{" leg-failed data leg 1 (8:32) of data: write-failed", " peer-down data data: peer", " store-failed - the dirty log's"} {
		if !strings.HasPrefix(lines[i], []string{"1 ", "2 ", "3 "}[i]) || !strings.Contains(lines[i], want) {
			t.Errorf("line %d: %q, want seq %d and %q", i, lines[i], i+1, want)
		}
	}
	t.Logf("dmsync events:\n%s", strings.Join(lines, "\n"))

	lines = follow(t, sock, 1, nil, "--since", "2", "--json")
	var e eventJSON
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil || e.Seq != 3 || e.Kind != "store-failed" || e.Volume != "" || e.Time.IsZero() {
		t.Fatalf("--since 2 --json: %q %v", lines[0], err)
	}

	lines = follow(t, sock, 1, func() { hub.Emit(events.ConsistentPoint, "data", "data: peer holds the volume") }, "--now")
	if !strings.HasPrefix(lines[0], "4 ") || !strings.Contains(lines[0], "consistent-point data") {
		t.Fatalf("--now: %q", lines)
	}
}

func TestEventsCommandBadInput(t *testing.T) {
	_, stderr, code := runNoDaemon(t, "events", "--since", "3", "--now")
	if code != exitUsage || !strings.Contains(stderr, "--since or --now, not both") {
		t.Fatalf("--since with --now: exit %d %q", code, stderr)
	}
	_, stderr, code = runNoDaemon(t, "events")
	if code != exitNoDaemon {
		t.Fatalf("no daemon: exit %d %q", code, stderr)
	}
}
