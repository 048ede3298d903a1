package replicate

import (
	"errors"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
)

// TestChunkingIsRecorded: a volume keeps the chunking it was first sent
// with; a node set to another one fails with a clear error, auto follows
// the record, and a new volume under auto without dm-crypt gets cdc.
func TestChunkingIsRecorded(t *testing.T) {
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := pebble.NewReplicaStore(db)
	m := func(chunking string) *Manager { return &Manager{opts: Options{Store: store, Chunking: chunking}} }
	src := Source{LogUUID: "vol-1", Path: "/nonexistent/mirror"}
	c, err := m("").chunkerFor(src, "peer", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(rpc.FixedChunker); !ok {
		t.Fatalf("default chunker %T, want fixed", c)
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
	if _, err := newChunker("zstd"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown chunking: %v", err)
	}
}
