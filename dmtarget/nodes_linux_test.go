//go:build linux

package dmtarget

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestNodes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mapper")
	info := Info{Name: "v", Major: 7, Minor: 300} // a loop-device number; the node is never opened
	if err := makeNode(dir, info); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("mknod not permitted here: %v", err)
		}
		t.Fatal(err)
	}
	if !nodeReady(dir, info) {
		t.Fatal("node not ready after makeNode")
	}
	if err := makeNode(dir, info); err != nil {
		t.Fatalf("makeNode is not idempotent: %v", err)
	}
	other := Info{Name: "v", Major: 7, Minor: 301}
	if nodeReady(dir, other) {
		t.Fatal("node ready for another device number")
	}
	if err := makeNode(dir, other); err != nil || !nodeReady(dir, other) {
		t.Fatalf("stale node not replaced: %v", err)
	}
	if err := removeNode(dir, "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "v")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("node left: %v", err)
	}
	if err := removeNode(dir, "v"); err != nil {
		t.Fatalf("removing a missing node: %v", err)
	}
}

// TestWaitNodeFallsBack: when udev does not create the node in time, the
// node is created here and a warning logged.
func TestWaitNodeFallsBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mapper")
	var logs bytes.Buffer
	opts := Options{MapperDir: dir, NodeTimeout: 100 * time.Millisecond, Udev: UdevOn, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	info := Info{Name: "w", Major: 7, Minor: 302}
	start := time.Now()
	err := waitNode(context.Background(), opts, info, nil)
	if errors.Is(err, unix.EPERM) {
		t.Skipf("mknod not permitted here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !nodeReady(dir, info) || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("node ready %v after %v", nodeReady(dir, info), time.Since(start))
	}
	if !strings.Contains(logs.String(), "udev did not create the device node") {
		t.Fatalf("no warning logged: %q", logs.String())
	}
	// A node that is already there returns at once; a cancelled wait
	// reports the context.
	if err := waitNode(context.Background(), opts, info, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitNode(ctx, opts, Info{Name: "x", Major: 7, Minor: 303}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
}
