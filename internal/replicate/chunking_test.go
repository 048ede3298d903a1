package replicate

import (
	"errors"
	"strings"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

// TestChunkingIsRecorded: a volume keeps the chunking it was first sent
// with; a node set to another one fails with a clear error, auto follows
// the record, and a new volume under auto without dm-crypt gets cdc.
func TestChunkingIsRecorded(t *testing.T) {
	store := memReplicaStore(t)
	m := func(chunking string) *Manager { return &Manager{opts: Options{Store: store, Chunking: chunking}} }
	src := Source{LogUUID: "vol-1", Path: "/nonexistent/mirror"}
	c, err := m("").chunkerFor(src, "peer", "")
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := c.(rpc.FixedChunker); !ok || f.Size != 16<<10 {
		t.Fatalf("default chunker %#v, want fixed with 16 KiB chunks", c)
	}
	if p, _, _ := store.Progress("vol-1", "peer"); p.Chunking != "fixed-16k" {
		t.Fatalf("recorded %q for vol-1, want fixed-16k", p.Chunking)
	}
	if _, err := m(ChunkingCDC).chunkerFor(src, "peer", ""); !errors.Is(err, ErrChunkingChanged) {
		t.Fatalf("switching to cdc: %v, want ErrChunkingChanged", err)
	} else {
		t.Log(err)
	}
	if c, err := m(ChunkingAuto).chunkerFor(src, "peer", ""); err != nil {
		t.Fatal(err)
	} else if _, ok := c.(rpc.FixedChunker); !ok {
		t.Fatalf("auto on a volume recorded as fixed gave %T", c)
	}
	other := Source{LogUUID: "vol-2", Path: "/nonexistent/mirror"}
	if c, err := m(ChunkingAuto).chunkerFor(other, "peer", ""); err != nil {
		t.Fatal(err)
	} else if _, ok := c.(*rpc.CDCChunker); !ok {
		t.Fatalf("auto on a plaintext volume gave %T, want cdc", c)
	}
	if p, _, _ := store.Progress("vol-2", "peer"); p.Chunking != ChunkingCDC {
		t.Fatalf("recorded %q for vol-2", p.Chunking)
	}
	// A send's own chunking (replicate --chunking) wins over the node's,
	// and is recorded the same way.
	third := Source{LogUUID: "vol-3", Path: "/nonexistent/mirror"}
	if c, err := m(ChunkingFixed).chunkerFor(third, "peer", ChunkingCDC); err != nil {
		t.Fatal(err)
	} else if _, ok := c.(*rpc.CDCChunker); !ok {
		t.Fatalf("replicate --chunking cdc on a node set to fixed gave %T", c)
	}
	if _, err := m(ChunkingCDC).chunkerFor(third, "peer", ChunkingFixed); !errors.Is(err, ErrChunkingChanged) {
		t.Fatalf("replicate --chunking fixed over a cdc replica: %v, want ErrChunkingChanged", err)
	}
	if _, err := New(Options{Log: nil}); err == nil {
		t.Fatal("New without a log succeeded")
	}
	if err := validChunking("zstd"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown chunking: %v", err)
	}
	if _, err := chunkerOf("fixed-1m"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown recorded format: %v", err)
	}
}

// TestChunkingLegacyFixed: a replica recorded as plain "fixed" was made
// with 4 KiB chunks, and keeps them under fixed and auto; cdc is refused.
func TestChunkingLegacyFixed(t *testing.T) {
	store := memReplicaStore(t)
	if err := store.RecordChunking("old", "peer", "fixed"); err != nil {
		t.Fatal(err)
	}
	src := Source{LogUUID: "old", Path: "/nonexistent/mirror"}
	for _, node := range []string{ChunkingFixed, ChunkingAuto, ""} {
		m := &Manager{opts: Options{Store: store, Chunking: node}}
		c, err := m.chunkerFor(src, "peer", "")
		if err != nil {
			t.Fatalf("node %q: %v", node, err)
		}
		if f, ok := c.(rpc.FixedChunker); !ok || f.Size != 4096 {
			t.Fatalf("node %q: chunker %#v for a 4 KiB replica", node, c)
		}
	}
	m := &Manager{opts: Options{Store: store, Chunking: ChunkingCDC}}
	if _, err := m.chunkerFor(src, "peer", ""); !errors.Is(err, ErrChunkingChanged) || !strings.Contains(err.Error(), "with fixed chunking") {
		t.Fatalf("cdc over a 4 KiB fixed replica: %v", err)
	}
	if p, _, _ := store.Progress("old", "peer"); p.Chunking != "fixed" {
		t.Fatalf("the record changed to %q", p.Chunking)
	}
}

// TestChunkingSmallRegions: on a volume whose regions are smaller than a
// 16 KiB chunk, fixed chunking records 4 KiB chunks, so that no chunk
// reaches past its region.
func TestChunkingSmallRegions(t *testing.T) {
	store := memReplicaStore(t)
	log := rpctest.NewFakeLog()
	log.AddVolume("small", 8<<10, 128)
	log.AddVolume("large", 64<<10, 16)
	m := &Manager{opts: Options{Store: store, Log: log}}
	for _, tc := range []struct {
		vol    string
		size   uint32
		format string
	}{{"small", 4096, "fixed"}, {"large", 16 << 10, "fixed-16k"}} {
		c, err := m.chunkerFor(Source{LogUUID: tc.vol, Path: "/nonexistent/mirror"}, "peer", "")
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := c.(rpc.FixedChunker); !ok || f.Size != tc.size {
			t.Fatalf("%s: chunker %#v, want %d-byte fixed chunks", tc.vol, c, tc.size)
		}
		if p, _, _ := store.Progress(tc.vol, "peer"); p.Chunking != tc.format {
			t.Fatalf("%s: recorded %q, want %q", tc.vol, p.Chunking, tc.format)
		}
	}
}

// memReplicaStore returns a replica store in memory, closed with the test.
func memReplicaStore(t *testing.T) *pebble.ReplicaStore {
	t.Helper()
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return pebble.NewReplicaStore(db)
}
