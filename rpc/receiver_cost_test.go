package rpc

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
)

// syncFS counts the syncs of the files Pebble writes.
type syncFS struct {
	vfs.FS
	n *atomic.Int64
}

func (fs syncFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, cat)
	return syncFile{f, fs.n}, err
}

func (fs syncFS) ReuseForWrite(old, new string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(old, new, cat)
	return syncFile{f, fs.n}, err
}

type syncFile struct {
	vfs.File
	n *atomic.Int64
}

func (f syncFile) Sync() error     { f.n.Add(1); return f.File.Sync() }
func (f syncFile) SyncData() error { f.n.Add(1); return f.File.SyncData() }

// TestReceiverIndexCostIsChanged: a batch over a 4 MiB range that changes
// one 4 KiB chunk writes index entries for that chunk, not for the range
// (measured in WAL bytes), and costs few syncs; a batch that changes
// nothing writes nothing to the image.
func TestReceiverIndexCostIsChanged(t *testing.T) {
	const size = 1024 * tChunk
	var syncs atomic.Int64
	db, err := pebbledb.Open("", &pebbledb.Options{FS: syncFS{vfs.NewMem(), &syncs}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	img := &memImage{b: make([]byte, size)}
	r, err := NewReceiver(ReceiverConfig{Store: pebble.NewReplicaStore(db), Volumes: []ReceiveVolume{{Name: tVol, Image: img, Size: size, Params: tParams, Senders: []string{tPeer}}}})
	if err != nil {
		t.Fatal(err)
	}
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i*131) ^ byte(i>>12) ^ byte(i>>20)
	}
	batch := func() (wal uint64, nsync int64, need Need) {
		t.Helper()
		rg, data, err := FixedChunker{Size: tChunk}.Cut(bytes.NewReader(src), size, 0, size)
		if err != nil {
			t.Fatal(err)
		}
		o := &Offer{Volume: tVol, VolumeSize: size, Params: tParams, Ranges: []Range{rg}}
		w0, s0 := db.Metrics().WAL.BytesIn, syncs.Load()
		b, need, err := r.Begin(context.Background(), tPeer, o)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range rg.Chunks {
			if need.Missing[i] {
				if err := b.Put(uint32(i), data[c.Offset:c.End()]); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		return db.Metrics().WAL.BytesIn - w0, syncs.Load() - s0, need
	}
	full, fullSyncs, _ := batch()
	src[500*tChunk+7] ^= 0xff // one chunk changes
	delta, deltaSyncs, need := batch()
	if need.Count() != 1 {
		t.Fatalf("delta needs %d chunks, want 1", need.Count())
	}
	t.Logf("index WAL bytes: full batch %d (%d syncs), one changed chunk %d (%d syncs)", full, fullSyncs, delta, deltaSyncs)
	if delta*50 > full {
		t.Errorf("a batch changing 1 of 1024 chunks wrote %d WAL bytes, the full batch %d: index cost is O(range)", delta, full)
	}
	if deltaSyncs > 3 {
		t.Errorf("a batch took %d Pebble syncs, want at most 3", deltaSyncs)
	}
	w := img.syncs
	if _, _, need := batch(); need.Count() != 0 || img.syncs != w {
		t.Errorf("an unchanged batch needed %d chunks and synced the image %d times", need.Count(), img.syncs-w)
	}
}
