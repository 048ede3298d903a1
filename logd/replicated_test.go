package logd_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dmsync/dmsync/logd"
)

// syncCountingFS counts the syncs of every file opened through it.
type syncCountingFS struct {
	vfs.FS
	syncs *atomic.Int64
}

func (fs syncCountingFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, cat)
	if err != nil {
		return nil, err
	}
	return syncCountingFile{f, fs.syncs}, nil
}

func (fs syncCountingFS) ReuseForWrite(old, new string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(old, new, cat)
	if err != nil {
		return nil, err
	}
	return syncCountingFile{f, fs.syncs}, nil
}

type syncCountingFile struct {
	vfs.File
	syncs *atomic.Int64
}

func (f syncCountingFile) Sync() error     { f.syncs.Add(1); return f.File.Sync() }
func (f syncCountingFile) SyncData() error { f.syncs.Add(1); return f.File.SyncData() }

// TestServerReplicatedBatchOneSync: acknowledging a batch of regions costs
// one sync, not one per region, and reports how many left the pending set.
func TestServerReplicatedBatchOneSync(t *testing.T) {
	var syncs atomic.Int64
	d := startDaemon(t, syncCountingFS{vfs.NewMem(), &syncs}, nil)
	defer d.close(t)
	ctx := context.Background()
	k := d.k
	check(t)(k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("65536 core 1024 nosync")))
	regions := []uint64{1, 5, 9, 20}
	check(t)(k.Do(ctx, "vol", 1, logd.ReqMarkRegion, logd.AppendRegions(nil, regions...)))
	check(t)(k.Do(ctx, "vol", 1, logd.ReqFlush, nil))
	check(t)(k.Do(ctx, "vol", 1, logd.ReqClearRegion, logd.AppendRegions(nil, regions[:3]...)))
	check(t)(k.Do(ctx, "vol", 1, logd.ReqFlush, nil))
	p, err := d.srv.Pending("vol")
	if err != nil || len(p) != len(regions) {
		t.Fatalf("pending %v %v", p, err)
	}
	before := syncs.Load()
	n, err := d.srv.Replicated("vol", p) // region 20 is still marked: stays
	if err != nil || n != 3 {
		t.Fatalf("Replicated = %d, %v; want 3 (region 20 has a write in flight)", n, err)
	}
	if got := syncs.Load() - before; got != 1 {
		t.Fatalf("a batch of %d regions took %d syncs, want 1", len(p), got)
	}
	left, err := d.srv.Pending("vol")
	if err != nil || len(left) != 1 || left[0].Region != 20 {
		t.Fatalf("pending after the batch: %v %v", left, err)
	}
	before = syncs.Load()
	if n, err := d.srv.Replicated("vol", p[:1]); n != 0 || err != nil { // already gone
		t.Fatalf("a second ack of region %d: %d, %v", p[0].Region, n, err)
	}
	if got := syncs.Load() - before; got != 0 {
		t.Fatalf("an ack that changed nothing took %d syncs", got)
	}
}
