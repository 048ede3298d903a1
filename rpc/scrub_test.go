package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/rpc"
)

// TestVerifyScrubFindsBytesChangedBehindTheIndex: bytes of the replica's
// image changed behind its index (as by a dd on B) are invisible to the
// index comparison, but the scrub lists exactly their 4 KiB pages; repair
// makes just their regions pending, and the next pass fixes them although
// the receiver's index claimed it held those chunks.
func TestVerifyScrubFindsBytesChangedBehindTheIndex(t *testing.T) {
	const size = 4 << 20
	r := newRig(t, size, size)
	s := r.sender(t, nil, nil)
	ctx := context.Background()
	if _, err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := s.Verify(ctx)
	if err != nil || !v.Equal || len(v.Differ) != 0 || !v.IndexEqual || v.Scrubbed != size {
		t.Fatalf("after sync: %+v, %v", v, err)
	}

	// Behind the index's back: three pages at 1 MiB + 8 KiB, one byte at
	// 3 MiB + 5.
	bad := bytes.Repeat([]byte{0xa5}, 12<<10)
	for i := range bad {
		bad[i] ^= r.src[1<<20+8<<10+i]
	}
	r.img.WriteAt(bad, 1<<20+8<<10)
	r.img.WriteAt([]byte{^r.src[3<<20+5]}, 3<<20+5)
	want := []blockhash.Range{{Off: 1<<20 + 8<<10, Len: 12 << 10}, {Off: 3 << 20, Len: 4 << 10}}

	v, err = s.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !v.IndexEqual || len(v.IndexDiffer) != 0 {
		t.Fatalf("the index comparison saw the change (it cannot: the index was not touched): %+v", v)
	}
	if v.Equal || !slices.Equal(v.Differ, want) {
		t.Fatalf("differ %v (equal %v), want exactly %v", v.Differ, v.Equal, want)
	}
	// The whole image once in 1 MiB pieces, then the two differing pieces
	// again in 4 KiB pieces.
	if v.Scrubbed != size+2<<20 {
		t.Errorf("scrubbed %d bytes, want %d", v.Scrubbed, size+2<<20)
	}

	regions, err := s.Repair(ctx, v.Differ)
	if err != nil {
		t.Fatal(err)
	}
	if wantR := []uint64{(1<<20 + 8<<10) / sRegion, 3 << 20 / sRegion}; !slices.Equal(regions, wantR) {
		t.Fatalf("repair made regions %v pending, want %v", regions, wantR)
	}
	if n := r.pending(t); n != 2 {
		t.Fatalf("%d regions pending after repair, want 2", n)
	}
	if _, err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.img.bytes(), r.src) {
		t.Fatal("the replica still differs after repair and a pass")
	}
	v, err = s.Verify(ctx)
	if err != nil || !v.Equal || len(v.Differ) != 0 || !v.IndexEqual {
		t.Fatalf("after repair: %+v, %v", v, err)
	}
}

// TestScrubRefusesBadRequests: malformed requests and unknown senders are
// refused before anything is read or dropped.
func TestScrubRefusesBadRequests(t *testing.T) {
	r := newRig(t, 1<<20, 1<<20)
	ctx := context.Background()
	none := func(rpc.ScrubDigests) error { t.Fatal("digests for a refused request"); return nil }
	cases := []struct {
		name string
		peer string
		req  rpc.ScrubRequest
		want error
	}{
		{"piece not a power of two", sPeer, rpc.ScrubRequest{Volume: sVol, Piece: 3 << 12}, rpc.ErrProtocol},
		{"piece too small", sPeer, rpc.ScrubRequest{Volume: sVol, Piece: 512}, rpc.ErrProtocol},
		{"unaligned range", sPeer, rpc.ScrubRequest{Volume: sVol, Piece: 4096, Ranges: []blockhash.Range{{Off: 100, Len: 4096}}}, rpc.ErrProtocol},
		{"range past the end", sPeer, rpc.ScrubRequest{Volume: sVol, Piece: 4096, Ranges: []blockhash.Range{{Off: 1 << 20, Len: 4096}}}, rpc.ErrProtocol},
		{"rate below 1 MiB/s", sPeer, rpc.ScrubRequest{Volume: sVol, Rate: 100 << 10}, rpc.ErrProtocol},
		{"forget everything", sPeer, rpc.ScrubRequest{Volume: sVol, Forget: true}, rpc.ErrProtocol},
		{"unknown volume", sPeer, rpc.ScrubRequest{Volume: "nope"}, rpc.ErrUnknownVolume},
		{"other sender", "node-x", rpc.ScrubRequest{Volume: sVol}, rpc.ErrPermission},
	}
	for _, c := range cases {
		if err := r.tr.Recv.Scrub(ctx, c.peer, c.req, none); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestRegionsOf: ranges map to the regions holding any of their bytes.
func TestRegionsOf(t *testing.T) {
	regions, spans := rpc.RegionsOf([]blockhash.Range{{Off: 100, Len: 10}, {Off: 60 << 10, Len: 8 << 10}, {Off: 200 << 10, Len: 1}}, 64<<10, 210<<10)
	if !slices.Equal(regions, []uint64{0, 1, 3}) {
		t.Fatalf("regions %v", regions)
	}
	want := []blockhash.Range{{Off: 0, Len: 128 << 10}, {Off: 192 << 10, Len: 18 << 10}}
	if !slices.Equal(spans, want) {
		t.Fatalf("spans %v, want %v (merged, clipped to the volume)", spans, want)
	}
}
