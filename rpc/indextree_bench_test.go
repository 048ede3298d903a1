package rpc

import (
	"encoding/binary"
	"log/slog"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
)

// BenchmarkReplicaRoot: the receiver's root after a batch that changed one
// 4 KiB chunk of a 1 GiB replica (262,144 chunks), from the kept tree
// ("kept") and, as the peer, built from the whole index as every call did
// before ("rebuild"). Run: go test -run X -bench ReplicaRoot ./rpc
func BenchmarkReplicaRoot(b *testing.B) {
	const size = 1 << 30
	const n = size / tChunk
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	st := pebble.NewReplicaStore(db)
	chunk := func(i, gen uint64) pebble.ReplicaChunk {
		c := pebble.ReplicaChunk{Offset: i * tChunk, Length: tChunk}
		binary.BigEndian.PutUint64(c.ID[:], i+1)
		binary.BigEndian.PutUint64(c.ID[8:], gen)
		return c
	}
	const step = 8192
	for i := uint64(0); i < n; i += step {
		cs := make([]pebble.ReplicaChunk, step)
		for j := range cs {
			cs[j] = chunk(i+uint64(j), 0)
		}
		if err := st.CommitApplied("big", i, []pebble.ByteRange{{Start: i * tChunk, End: (i + step) * tChunk}}, cs); err != nil {
			b.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	change := func(it int) []pebble.ByteRange {
		i := uint64(it*7919) % n
		rg := []pebble.ByteRange{{Start: i * tChunk, End: (i + 1) * tChunk}}
		if err := st.CommitApplied("big", uint64(it), rg, []pebble.ReplicaChunk{chunk(i, uint64(it)+1)}); err != nil {
			b.Fatal(err)
		}
		return rg
	}
	b.Run("kept", func(b *testing.B) {
		var x indexTree
		if _, _, _, err := x.current(st, "big", size, log); err != nil {
			b.Fatal(err)
		}
		it := 0
		for b.Loop() {
			it++
			x.changed(change(it))
			if _, _, _, err := x.current(st, "big", size, log); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A delta point of 1% scattered 4 KiB writes: 2,621 changed chunks.
	b.Run("kept-1pct", func(b *testing.B) {
		var x indexTree
		if _, _, _, err := x.current(st, "big", size, log); err != nil {
			b.Fatal(err)
		}
		it := 0
		for b.Loop() {
			b.StopTimer()
			for range n / 100 {
				it++
				x.changed(change(it))
			}
			b.StartTimer()
			if _, _, _, err := x.current(st, "big", size, log); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rebuild", func(b *testing.B) {
		it := 0
		for b.Loop() {
			it++
			change(it)
			var x indexTree
			if _, _, _, err := x.current(st, "big", size, log); err != nil {
				b.Fatal(err)
			}
		}
	})
}
