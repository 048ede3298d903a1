package rpc

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/pebble"
)

func TestRehashIndex(t *testing.T) {
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	x := pebble.NewChunkIndex(db)
	params := blockhash.Params{Version: blockhash.FormatVersion, Min: 512, Avg: 2048, Max: 8192}
	c, err := blockhash.NewChunker(params)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	data := randomVolume(rng, 500000)
	all := func() []pebble.IndexChunk {
		list, _, err := c.All(context.Background(), bytes.NewReader(data), uint64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		out := make([]pebble.IndexChunk, len(list))
		for i, c := range list {
			out[i] = pebble.IndexChunk(c)
		}
		return out
	}
	root := func(l []pebble.IndexChunk) [32]byte {
		b := make([]blockhash.Chunk, len(l))
		for i, c := range l {
			b[i] = blockhash.Chunk(c)
		}
		return blockhash.NewTree(b).Root()
	}
	list := all()
	if err := x.Create("v", pebble.VolumeInfo{Params: pebble.IndexParams(params), Size: uint64(len(data)), Root: root(list)}, list); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		var changes []blockhash.Range
		for range 3 {
			off := rng.IntN(len(data) - 5000)
			copy(data[off:], randomVolume(rng, 5000))
			changes = append(changes, blockhash.Range{Off: uint64(off), Len: 5000})
		}
		d, err := RehashIndex(context.Background(), x, "v", bytes.NewReader(data), uint64(len(data)), changes)
		if err != nil {
			t.Fatal(err)
		}
		if d.BytesRead == 0 || d.BytesRead >= uint64(len(data)) {
			t.Errorf("rehash read %d bytes of %d", d.BytesRead, len(data))
		}
		want := all()
		info, got, err := x.Load("v")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) || info.Root != root(want) {
			t.Fatal("stored index differs from a full re-chunk")
		}
	}
	// A device of the wrong size leaves the index as it was.
	_, before, _ := x.Load("v")
	_, err = RehashIndex(context.Background(), x, "v", bytes.NewReader(data[:400000]), 400000, nil)
	if !errors.Is(err, blockhash.ErrSizeMismatch) {
		t.Fatalf("err = %v", err)
	}
	if _, after, _ := x.Load("v"); !slices.Equal(before, after) {
		t.Fatal("failed rehash changed the index")
	}
}
