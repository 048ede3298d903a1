package events

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// A handler gets the event in its environment and as JSON on stdin; files
// that are not executable or not run-parts names do not run.
func TestHandlersRun(t *testing.T) {
	dir := t.TempDir()
	out := t.TempDir()
	writeScript(t, filepath.Join(dir, "10-env"), `echo "$DMSYNC_EVENT_SEQ $DMSYNC_EVENT_KIND $DMSYNC_EVENT_VOLUME $DMSYNC_EVENT_MESSAGE" >> `+out+"/env\n")
	writeScript(t, filepath.Join(dir, "20-stdin"), "cat >> "+out+"/stdin\n")
	writeScript(t, filepath.Join(dir, "30-fails"), "echo oops; exit 3\n")
	writeScript(t, filepath.Join(dir, "backup~"), "touch "+out+"/ran-backup\n")
	writeScript(t, filepath.Join(dir, "x.dpkg-old"), "touch "+out+"/ran-dpkg\n")
	if err := os.WriteFile(filepath.Join(dir, "noexec"), []byte("#!/bin/sh\ntouch "+out+"/ran-noexec\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hub := NewHub(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	h := Handlers{Dir: dir, Timeout: 5 * time.Second}
	hub.Emit(LegFailed, "vol", "leg 1 failed") // before Run: still handled (Since 0)
	go func() { h.Run(ctx, hub); close(done) }()
	hub.Emit(LegRepaired, "vol", "leg 1 repaired")
	deadline := time.Now().Add(10 * time.Second)
	var env []byte
	for time.Now().Before(deadline) {
		env, _ = os.ReadFile(filepath.Join(out, "env"))
		if strings.Count(string(env), "\n") == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the second event's later handlers
	cancel()
	<-done
	if string(env) != "1 leg-failed vol leg 1 failed\n2 leg-repaired vol leg 1 repaired\n" {
		t.Fatalf("env seen by the handler: %q", env)
	}
	stdin, _ := os.ReadFile(filepath.Join(out, "stdin"))
	lines := strings.Split(strings.TrimSpace(string(stdin)), "\n")
	var e Event
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &e) != nil || e.Kind != LegFailed || e.Seq != 1 || e.Volume != "vol" {
		t.Fatalf("stdin seen by the handler: %q", stdin)
	}
	for _, f := range []string{"ran-backup", "ran-dpkg", "ran-noexec"} {
		if _, err := os.Stat(filepath.Join(out, f)); err == nil {
			t.Errorf("%s: a file that is not a handler ran", f)
		}
	}
}

func TestRunHandlerTimeout(t *testing.T) {
	p := filepath.Join(t.TempDir(), "slow")
	writeScript(t, p, "echo started; exec sleep 30\n")
	start := time.Now()
	out, err := RunHandler(context.Background(), p, Event{Kind: PeerDown}, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "killed after") || !strings.Contains(out, "started") {
		t.Fatalf("slow handler: %q, %v", out, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("a 200ms timeout took %v", el)
	}
}

func TestHandlersMissingDir(t *testing.T) {
	h := Handlers{Dir: filepath.Join(t.TempDir(), "none")}
	if p, err := h.list(); err != nil || p != nil {
		t.Fatalf("missing dir: %v %v", p, err)
	}
}
