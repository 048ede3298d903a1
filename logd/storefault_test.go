package logd_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/kerneltest"
	"github.com/dmsync/dmsync/pebble"
)

// failAfter fails every write and sync op from the n-th on (counted from
// when it is armed): a disk that fills up or goes bad and stays so.
type failAfter struct {
	armed atomic.Bool
	n     int64
	seen  atomic.Int64
	err   error
}

func (f *failAfter) String() string { return fmt.Sprintf("fail after %d", f.n) }

func (f *failAfter) MaybeError(op errorfs.Op) error {
	if !f.armed.Load() || op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
		return nil
	}
	if f.seen.Add(1) >= f.n {
		return f.err
	}
	return nil
}

// TestStoreFaultAtEveryWritePoint injects ENOSPC and EIO at every write
// and sync point of a workload, in turn. Whatever the point: the server
// never panics or hangs, answers every kernel request, never acknowledges
// a Replicated after the failure, sets the fail flag; and a restart on
// what the disk kept makes every region pending and marked.
func TestStoreFaultAtEveryWritePoint(t *testing.T) {
	const regions = 32
	for _, errno := range []error{syscall.ENOSPC, syscall.EIO} {
		failedRuns := 0
		for n := int64(1); ; n++ {
			failed, ok := storeFaultRun(t, errno, n, regions)
			if !ok {
				return
			}
			if !failed {
				t.Logf("%v: the workload makes %d write ops; failed %d runs", errno, n-1, failedRuns)
				if failedRuns == 0 {
					t.Fatalf("%v: no run met the fault", errno)
				}
				break
			}
			failedRuns++
		}
	}
}

// storeFaultRun runs the workload with the fault at write op n and reports
// whether the store failed.
func storeFaultRun(t *testing.T, errno error, n int64, regions uint64) (failed, ok bool) {
	t.Helper()
	mem := vfs.NewCrashableMem()
	inj := &failAfter{n: n, err: errno}
	db, err := pebble.Open("state", &pebble.Options{FS: errorfs.Wrap(mem, inj)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := logd.NewServer(logd.PebbleStore{DB: db}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetCommitTimeout(2 * time.Second)
	flagPath := filepath.Join(t.TempDir(), "store-failed")
	flag, err := logd.OpenFailFlag(flagPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.UseFailFlag(flag); err != nil {
		t.Fatal(err)
	}
	k := kerneltest.New()
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, k.Conn()) }()
	do := func(typ logd.RequestType, data []byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := k.Do(ctx, "v", 1, typ, data); err != nil {
			t.Fatalf("%v at op %d: %v %v unanswered: %v", errno, n, typ, data, err)
		}
	}
	do(logd.ReqCtr, []byte(fmt.Sprintf("%d core 8 nosync", regions*8)))
	do(logd.ReqResume, nil)
	inj.armed.Store(true)
	acked := 0
	for r := range regions {
		do(logd.ReqMarkRegion, logd.AppendRegions(nil, r))
		do(logd.ReqFlush, nil)
		do(logd.ReqClearRegion, logd.AppendRegions(nil, r))
		do(logd.ReqFlush, nil)
		if r%4 == 3 {
			p, err := srv.Pending("v")
			if err != nil {
				t.Fatal(err)
			}
			m, err := srv.Replicated("v", p[:1])
			storeErr := srv.StoreError()
			switch {
			case storeErr != nil && err == nil:
				t.Fatalf("%v at op %d: Replicated acknowledged %d regions after the store failed", errno, n, m)
			case err == nil:
				acked += m
			}
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	storeErr := srv.StoreError() // the final checkpoint may meet the fault too
	if set, _ := flag.IsSet(); set != (storeErr != nil) {
		t.Fatalf("%v at op %d: flag set %v, store error %v", errno, n, set, storeErr)
	}
	if storeErr == nil {
		db.Close()
		return false, true
	}
	if !errors.Is(storeErr, logd.ErrStore) {
		t.Fatalf("store error %v", storeErr)
	}
	flag.Close()
	// The disk is repaired: a restart on what it kept, with the flag.
	db2, err := pebble.Open("state", &pebble.Options{FS: mem.CrashClone(vfs.CrashCloneCfg{})})
	if err != nil {
		t.Fatalf("%v at op %d: reopen: %v", errno, n, err)
	}
	defer db2.Close()
	srv2, err := logd.NewServer(logd.PebbleStore{DB: db2}, nil)
	if err != nil {
		t.Fatalf("%v at op %d: recover: %v", errno, n, err)
	}
	flag2, err := logd.OpenFailFlag(flagPath)
	if err != nil {
		t.Fatal(err)
	}
	defer flag2.Close()
	if set, _ := flag2.IsSet(); !set {
		t.Fatalf("%v at op %d: the fail flag did not survive", errno, n)
	}
	if err := srv2.UseFailFlag(flag2); err != nil {
		t.Fatal(err)
	}
	if set, _ := flag2.IsSet(); set {
		t.Fatalf("flag not cleared after the full resync was stored")
	}
	if vols := srv2.Volumes(); len(vols) == 0 {
		// The CTR itself was lost with the store: the kernel's next table
		// load (or reconnect) creates the log anew, with every region out
		// of sync for a new log.
		return true, true
	}
	p, err := srv2.Pending("v")
	if err != nil || uint64(len(p)) != regions {
		t.Fatalf("%v at op %d: after the restart %d of %d regions pending (%v)", errno, n, len(p), regions, err)
	}
	// A table load after a reboot: every region is out of sync.
	k2 := kerneltest.New()
	ctx2, stop2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- srv2.Serve(ctx2, k2.Conn()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := k2.Do(ctx, "v", 2, logd.ReqCtr, []byte(fmt.Sprintf("%d core 8 nosync", regions*8))); err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Do(ctx, "v", 2, logd.ReqResume, nil); err != nil {
		t.Fatal(err)
	}
	reply, err := k2.Do(ctx, "v", 2, logd.ReqGetSyncCount, nil)
	if err != nil || len(reply) != 8 || string(reply) != string(make([]byte, 8)) {
		t.Fatalf("%v at op %d: sync count after the restart %x %v, want 0", errno, n, reply, err)
	}
	stop2()
	<-done2
	return true, true
}

// hangingStore's commits never return (Pebble stalls writes when it cannot
// flush to a full disk).
type hangingStore struct{ logd.Store }

func (hangingStore) Commit([]logd.Change, bool) error     { select {} }
func (hangingStore) Load() ([]logd.VolumeSnapshot, error) { return nil, nil }

// TestStoreThatHangsCountsAsFailed: a commit that does not return within
// the commit timeout fails the store; the kernel is answered.
func TestStoreThatHangsCountsAsFailed(t *testing.T) {
	srv, err := logd.NewServer(hangingStore{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetCommitTimeout(100 * time.Millisecond)
	k := kerneltest.New()
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, k.Conn()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	check(t)(k.Do(ctx, "v", 1, logd.ReqCtr, []byte("100 core 8")))
	check(t)(k.Do(ctx, "v", 1, logd.ReqFlush, logd.AppendRegions(nil, 2)))
	if err := srv.StoreError(); err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("store error %v after %v", err, time.Since(start))
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
