package logd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/logd"
)

// TestPendAllDurable: PendAll makes every region pending with a generation
// newer than any before, survives a restart, and makes a replication
// recorded with an older generation fail.
func TestPendAllDurable(t *testing.T) {
	fs := vfs.NewCrashableMem()
	d := startDaemon(t, fs, nil)
	ctx := context.Background()
	check(t)(d.k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("8192 core 1024 nosync"))) // 8 regions
	check(t)(d.k.Do(ctx, "vol", 1, logd.ReqMarkRegion, logd.AppendRegions(nil, 2)))
	check(t)(d.k.Do(ctx, "vol", 1, logd.ReqFlush, nil))
	check(t)(d.k.Do(ctx, "vol", 1, logd.ReqClearRegion, logd.AppendRegions(nil, 2)))
	before, err := d.srv.Pending("vol")
	if err != nil || len(before) != 1 {
		t.Fatalf("pending before: %v %v", before, err)
	}
	if err := d.srv.PendAll("nope"); !errors.Is(err, logd.ErrUnknownVolume) {
		t.Fatalf("PendAll of an unknown volume: %v", err)
	}
	if err := d.srv.PendAll("vol"); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // only what was synced
	if n, _ := d.srv.Replicated("vol", []logd.PendingRegion{{Region: 2, Gen: before[0].Gen}}); n != 0 {
		t.Fatal("a replication with the generation from before PendAll was accepted")
	}
	d.close(t)

	d = startDaemon(t, crashed, nil)
	defer d.close(t)
	after, err := d.srv.Pending("vol")
	if err != nil || len(after) != 8 {
		t.Fatalf("after restart: %d pending (%v), want all 8", len(after), err)
	}
	for _, p := range after {
		if p.Gen <= before[0].Gen {
			t.Errorf("region %d gen %d not newer than %d", p.Region, p.Gen, before[0].Gen)
		}
	}
}

// TestPendRegionsDurable: PendRegions makes exactly the given regions
// pending with generations newer than any before, refuses regions past
// the end without changing anything, survives a crash, and makes a
// replication recorded with an older generation fail.
func TestPendRegionsDurable(t *testing.T) {
	fs := vfs.NewCrashableMem()
	d := startDaemon(t, fs, nil)
	ctx := context.Background()
	check(t)(d.k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("8192 core 1024 nosync"))) // 8 regions
	check(t)(d.k.Do(ctx, "vol", 1, logd.ReqMarkRegion, logd.AppendRegions(nil, 2)))
	check(t)(d.k.Do(ctx, "vol", 1, logd.ReqFlush, nil))
	check(t)(d.k.Do(ctx, "vol", 1, logd.ReqClearRegion, logd.AppendRegions(nil, 2)))
	before, err := d.srv.Pending("vol")
	if err != nil || len(before) != 1 {
		t.Fatalf("pending before: %v %v", before, err)
	}
	if err := d.srv.PendRegions("nope", []uint64{1}); !errors.Is(err, logd.ErrUnknownVolume) {
		t.Fatalf("PendRegions of an unknown volume: %v", err)
	}
	if err := d.srv.PendRegions("vol", []uint64{1, 8}); !errors.Is(err, logd.ErrRegionRange) {
		t.Fatalf("PendRegions past the end: %v", err)
	}
	if p, _ := d.srv.Pending("vol"); len(p) != 1 {
		t.Fatalf("a refused PendRegions changed the pending set: %v", p)
	}
	if err := d.srv.PendRegions("vol", []uint64{2, 5, 7}); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // only what was synced
	if n, _ := d.srv.Replicated("vol", []logd.PendingRegion{{Region: 2, Gen: before[0].Gen}}); n != 0 {
		t.Fatal("a replication with the generation from before PendRegions was accepted")
	}
	d.close(t)

	d = startDaemon(t, crashed, nil)
	defer d.close(t)
	after, err := d.srv.Pending("vol")
	if err != nil || len(after) != 3 {
		t.Fatalf("after restart: %v (%v), want regions 2, 5, 7", after, err)
	}
	for i, want := range []uint64{2, 5, 7} {
		if after[i].Region != want || after[i].Gen <= before[0].Gen {
			t.Errorf("pending[%d] = %+v, want region %d with a generation newer than %d", i, after[i], want, before[0].Gen)
		}
	}
}
