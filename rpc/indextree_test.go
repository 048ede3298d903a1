package rpc

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/dmsync/dmsync/blockhash"
)

// TestIndexTreeFollowsIndex runs random batches, aborted batches and
// forgets against a receiver and checks after each that its kept tree
// equals one built from the whole index at that moment, that it was built
// once and only spliced after, and that a whole replica has the source's
// root.
func TestIndexTreeFollowsIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 41))
	img := &memImage{b: make([]byte, tSize)}
	r, st := newTestReceiver(t, img)
	v := r.vols[tVol]
	src := pattern(9)
	ctx := context.Background()
	check := func(step string) RootInfo {
		t.Helper()
		info, err := r.Root(tPeer, tVol)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		var fresh indexTree
		tree, chunks, covered, err := fresh.current(st, tVol, tSize, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if info.Root != tree.Root() || info.Chunks != chunks || info.Covered != covered {
			t.Fatalf("%s: kept tree says root %x, %d chunks, %d bytes; the index says %x, %d, %d",
				step, info.Root[:4], info.Chunks, info.Covered, tree.Root(), chunks, covered)
		}
		return info
	}
	if info := check("empty"); info.Chunks != 0 || info.Covered != 0 {
		t.Fatalf("empty replica: %+v", info)
	}
	for step := range 200 {
		start := uint64(rng.IntN(64)) * tChunk
		end := min(tSize, start+uint64(1+rng.IntN(12))*tChunk)
		switch op := rng.IntN(10); {
		case op < 6: // a batch of new content
			for range 1 + rng.IntN(4) {
				p := rng.IntN(tSize - 8)
				copy(src[p:], []byte{byte(step), byte(step >> 8), 0xA5, byte(rng.Uint32())})
			}
			o, data := offerFor(t, src, start, end)
			apply(t, r, o, data)
		case op < 8: // a batch that wrote and then failed
			o, data := offerFor(t, src, start, end)
			b, need, err := r.Begin(ctx, tPeer, o)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range o.Ranges[0].Chunks {
				if need.Missing[i] {
					if err := b.Put(uint32(i), data[c.Offset-start:c.End()-start]); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
			b.Abort()
		default: // repair forgets the index over a range
			err := r.Scrub(ctx, tPeer, ScrubRequest{Volume: tVol, Piece: MinScrubPiece, Ranges: []blockhash.Range{{Off: start, Len: end - start}}, Forget: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
		}
		check(fmt.Sprintf("step %d", step))
	}
	// Send it all: the replica is whole and has the source's root.
	o, data := offerFor(t, src, 0, tSize)
	apply(t, r, o, data)
	info := check("whole")
	want, n, _ := SourceRoot(FixedChunker{Size: tChunk}, bytes.NewReader(src), tSize)
	if info.Root != want || info.Chunks != n || info.Covered != tSize {
		t.Fatalf("whole replica: %+v, want root %x and %d chunks", info, want[:4], n)
	}
	if v.tree.rebuilds != 1 || v.tree.splices == 0 {
		t.Fatalf("the kept tree was built %d times and spliced %d times, want once and then spliced", v.tree.rebuilds, v.tree.splices)
	}
	// Asking again without a change costs nothing.
	s := v.tree.splices
	check("again")
	if v.tree.splices != s || v.tree.rebuilds != 1 {
		t.Fatal("an unchanged index was read again")
	}
}

// TestIndexTreeHoles: a replica missing bytes never has the root of a
// whole source, even where the index it holds matches the source.
func TestIndexTreeHoles(t *testing.T) {
	img := &memImage{b: make([]byte, tSize)}
	r, _ := newTestReceiver(t, img)
	src := pattern(4)
	o, data := offerFor(t, src, 0, tSize-tChunk)
	_, ack := apply(t, r, o, data)
	whole, _, _ := SourceRoot(FixedChunker{Size: tChunk}, bytes.NewReader(src), tSize)
	if ack.Root == whole || ack.Chunks != 63 {
		t.Fatalf("replica without its last chunk: root equal %v, %d chunks", ack.Root == whole, ack.Chunks)
	}
	info, _ := r.Root(tPeer, tVol)
	if info.Covered != tSize-tChunk {
		t.Fatalf("covered %d", info.Covered)
	}
}
