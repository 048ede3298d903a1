package logd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/kerneltest"
)

// TestServerStats drives the server through the fake kernel and checks
// that Stats counts every answered request by type, with a histogram that
// adds up, and the store's syncs.
func TestServerStats(t *testing.T) {
	ctx := context.Background()
	d := startDaemon(t, vfs.NewMem(), nil)
	defer d.close(t)
	check(t)(d.k.Do(ctx, "v", 1, logd.ReqCtr, []byte("8192 core 8 nosync")))
	for r := range uint64(5) {
		check(t)(d.k.Do(ctx, "v", 1, logd.ReqMarkRegion, logd.AppendRegions(nil, r)))
		check(t)(d.k.Do(ctx, "v", 1, logd.ReqFlush, nil))
	}
	check(t)(d.k.Do(ctx, "v", 1, logd.ReqInSync, logd.AppendRegions(nil, 3)))

	// A reply is counted just after it is sent: wait for the last one.
	var st logd.Stats
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		st = d.srv.Stats()
		if len(st.Requests) == 4 || time.Now().After(deadline) {
			break
		}
	}
	want := map[logd.RequestType]uint64{logd.ReqCtr: 1, logd.ReqMarkRegion: 5, logd.ReqFlush: 5, logd.ReqInSync: 1}
	if len(st.Requests) != len(want) {
		t.Fatalf("stats for %d request types, want %d: %+v", len(st.Requests), len(want), st.Requests)
	}
	for _, r := range st.Requests {
		if r.Count != want[r.Type] {
			t.Errorf("%s: count %d, want %d", r.Name, r.Count, want[r.Type])
		}
		var sum uint64
		for _, b := range r.Buckets {
			sum += b
		}
		if sum != r.Count || r.Sum <= 0 {
			t.Errorf("%s: buckets add up to %d of %d answers, latency sum %v", r.Name, sum, r.Count, r.Sum)
		}
	}
	if st.Syncs == 0 || st.SyncTime <= 0 || st.StoreError != "" {
		t.Errorf("store: %d syncs in %v, error %q; marks need synced commits", st.Syncs, st.SyncTime, st.StoreError)
	}
}

// TestServerStatsStoreError: a failed commit shows in Stats, and the
// kernel is still answered (from memory).
func TestServerStatsStoreError(t *testing.T) {
	srv, err := logd.NewServer(failingStore{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := kerneltest.New()
	serveCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx, k.Conn()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := k.Request(ctx, "v", 1, logd.ReqCtr, []byte("100 core 8")); err != nil {
		t.Fatalf("CTR with a failing store: %v; want it answered from memory", err)
	}
	if st := srv.Stats(); !strings.Contains(st.StoreError, "disk on fire") {
		t.Fatalf("store error in stats: %q", st.StoreError)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("serve after stop: %v", err)
	}
}
