package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/logd"
)

// smallFS mounts a tmpfs of size bytes (root only; skips otherwise).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fill writes a file until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	small := make([]byte, 4096)
	for {
		if _, err := f.Write(small); err != nil {
			break
		}
	}
	return p
}

// TestStateDirFillsUp: the state dir's file system fills up under a
// running log server. Every kernel request is still answered promptly,
// Health names the failed store, Replicated is refused; once space is
// freed the daemon asks to restart itself, and the restart makes every
// region pending.
func TestStateDirFillsUp(t *testing.T) {
	fsDir := smallFS(t, "48m")
	l, sock := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	cfg := testConfigAt(t, filepath.Join(fsDir, "state"))
	old := recoverEvery
	recoverEvery = 200 * time.Millisecond
	defer func() { recoverEvery = old }()
	s := serveDaemon(t, cfg, l)
	s.d.logd.SetCommitTimeout(3 * time.Second)
	ctx := context.Background()
	if _, err := s.k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("65536 core 8 nosync")); err != nil {
		t.Fatal(err)
	}
	kernelAnswers(t, s, 1)
	filler := fill(t, fsDir)
	var worst time.Duration
	for i := range 3000 {
		t0 := time.Now()
		r := uint64(i % 8192)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.k.Do(rctx, "vol", 1, logd.ReqFlush, logd.AppendRegions(nil, r))
		cancel()
		if err != nil {
			t.Fatalf("request %d on a full state dir: %v\n%s", i, err, s.log)
		}
		worst = max(worst, time.Since(t0))
		if s.d.logd.StoreError() != nil && i > 200 {
			break
		}
	}
	t.Logf("longest kernel request while the state dir filled up: %v", worst)
	if s.d.logd.StoreError() == nil {
		t.Skip("the store never met the full file system (Pebble kept it all in its WAL)")
	}
	h := waitHealth(t, cfg, "store", s)
	if !h.GetStoreFailed() {
		t.Fatalf("health: %v", h)
	}
	if _, err := s.d.logd.Replicated("vol", []logd.PendingRegion{{Region: 1, Gen: 1}}); !errors.Is(err, logd.ErrStore) {
		t.Fatalf("replicated on a failed store: %v", err)
	}
	if !strings.Contains(s.log.String(), "state store failed") {
		t.Fatalf("no error line:\n%s", s.log)
	}
	os.Remove(filler)
	select {
	case err := <-s.done:
		if !errors.Is(err, errReexec) {
			t.Fatalf("serve after the space came back: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no restart after the space came back\n%s", s.log)
	}

	s.d.close()
	// The restart, as the re-exec would be: a fresh process on what the
	// file system holds (a copy: this test process cannot drop the failed
	// store's Pebble lock, which an exec closes): every region pending,
	// the fail flag cleared once that is stored.
	restarted := t.TempDir()
	if out, err := exec.Command("cp", "-a", cfg.stateDir, restarted).CombinedOutput(); err != nil {
		t.Fatalf("cp: %s %v", out, err)
	}
	rcfg := testConfigAt(t, filepath.Join(restarted, "state"))
	for range 2 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "DMSYNCD_TEST_PENDING="+strings.Join(rcfg.args, " "))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "pending=8192 flag=false" {
			t.Fatalf("restart: %s %v", out, err)
		}
	}
}

// TestStartOnFullStateDir: a daemon started on a full state dir serves the
// kernel in the degraded mode (from memory, store failed) within seconds,
// and stops on SIGTERM (ctx).
func TestStartOnFullStateDir(t *testing.T) {
	fsDir := smallFS(t, "40m")
	l, sock := notifyListener(t)
	t.Setenv("NOTIFY_SOCKET", sock)
	cfg := testConfigAt(t, filepath.Join(fsDir, "state"))
	s := serveDaemon(t, cfg, l) // creates the store
	ctx := context.Background()
	if _, err := s.k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("4096 core 8 nosync")); err != nil {
		t.Fatal(err)
	}
	kernelAnswers(t, s, 2)
	s.stop(t)
	fill(t, fsDir)
	t0 := time.Now()
	s = serveDaemon(t, cfg, l)
	t.Logf("ready on a full state dir after %v", time.Since(t0))
	if s.d.logd.StoreError() == nil {
		t.Fatal("store not failed on a full state dir")
	}
	if _, err := s.k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("4096 core 8 nosync")); err != nil {
		t.Fatal(err)
	}
	kernelAnswers(t, s, 3)
	p, _ := s.d.Replicator().Pending("vol")
	if len(p) != 2 {
		t.Fatalf("pending from memory %v", p)
	}
	waitHealth(t, cfg, "cannot take writes", s)
	s.stop(t)
}
