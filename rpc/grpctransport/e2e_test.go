package grpctransport

import (
	"bytes"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/rpc"
)

func TestReplicateRandomWrites(t *testing.T) {
	const size = 8 << 20
	s := newSenderNode(t, size, 256<<10, 16<<10, 1)
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	calls := checkReplicatedEarly(t, s, r)
	snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
	ctx := ctxT(t)

	st, err := snd.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	equalFiles(t, s.path, r.path)
	allReplicated(t, s)
	if st.BytesSent >= size {
		t.Errorf("initial sync sent %d bytes for %d (zero chunks should be deduplicated)", st.BytesSent, size)
	}
	if calls.Load() != int64(size/(256<<10)) {
		t.Errorf("%d Replicated calls, want %d", calls.Load(), size/(256<<10))
	}
	v, err := snd.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Equal || v.Source.Root != snd.LastAck().Root {
		t.Fatalf("roots differ after initial sync: %+v, last ack %v", v, snd.LastAck().Root)
	}

	for round := range 3 {
		s.randomWrites(20)
		before := snd.Stats()
		if _, err := snd.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		after := snd.Stats()
		equalFiles(t, s.path, r.path)
		allReplicated(t, s)
		v, err := snd.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Equal || v.Replica.Applying {
			t.Fatalf("round %d: roots differ: %+v", round, v)
		}
		sent := after.BytesSent - before.BytesSent
		read := after.BytesRead - before.BytesRead
		// 20 writes of ≤ 8 KiB touch at most 40 chunks of 16 KiB and 40 regions.
		if sent > 40*16<<10 || read > 40*256<<10 || sent == 0 {
			t.Errorf("round %d: read %d, sent %d bytes for 20 small writes", round, read, sent)
		}
	}
}

// TestReplicateCDC runs the same story with blockhash's content-defined
// chunker: chunks straddle regions, ranges extend to chunk boundaries.
func TestReplicateCDC(t *testing.T) {
	const size = 4 << 20
	s := newSenderNode(t, size, 64<<10, 16<<10, 3)
	c, err := blockhash.NewChunker(blockhash.Params{Version: blockhash.FormatVersion, Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	cdc := rpc.NewCDCChunker(c, nil)
	s.chunker = cdc
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	checkReplicatedEarly(t, s, r)
	snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
	ctx := ctxT(t)
	for round := range 4 {
		if round > 0 {
			s.randomWrites(25)
		}
		before := snd.Stats()
		if _, err := snd.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		after := snd.Stats()
		equalFiles(t, s.path, r.path)
		allReplicated(t, s)
		if round > 0 && (after.ChunksPatched == before.ChunksPatched || after.BytesSent-before.BytesSent > 25*(8<<10+2*4096)) {
			t.Errorf("round %d: %d chunks patched, %d bytes sent for 25 writes of ≤ 8 KiB", round, after.ChunksPatched-before.ChunksPatched, after.BytesSent-before.BytesSent)
		}
		v, err := snd.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Equal || snd.LastAck().Root != v.Source.Root {
			t.Fatalf("round %d: roots differ: %+v, last ack %v", round, v, snd.LastAck().Root)
		}
	}
}

// TestPatchRetryOverWire: changed blocks corrupted in flight make the
// patched chunk fail verification; the receiver asks for it whole in a
// second round and the batch still commits.
func TestPatchRetryOverWire(t *testing.T) {
	const size = 1 << 20
	s := newSenderNode(t, size, 64<<10, 16<<10, 4)
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	checkReplicatedEarly(t, s, r)
	var n atomic.Int64
	tr := &recordingTransport{Transport: s.dial(r, DialOptions{}), corruptBlocks: func() bool { return n.Add(1)%2 == 1 }}
	snd := s.sender(tr, r.id.ID)
	ctx := ctxT(t)
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	s.randomWrites(10)
	st, err := snd.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	equalFiles(t, s.path, r.path)
	allReplicated(t, s)
	if st.ChunksResent == 0 || st.Failures != 0 {
		t.Fatalf("%d block sends, %d resent, %d failures", n.Load(), st.ChunksResent, st.Failures)
	}
}

// TestVerifyListsDifferingRanges: bytes changed behind the dirty log's
// back make the roots differ; the Merkle descent over the wire names
// exactly the chunks that hold them, and the scrub of the replica's image
// names exactly their 4 KiB pages.
func TestVerifyListsDifferingRanges(t *testing.T) {
	const size, chunk = 4 << 20, 16 << 10
	s := newSenderNode(t, size, 64<<10, chunk, 5)
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
	ctx := ctxT(t)
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := snd.Verify(ctx)
	if err != nil || !v.Equal || len(v.Differ) != 0 || len(v.IndexDiffer) != 0 || v.Source.Root != v.Replica.Root {
		t.Fatalf("after sync: %+v, %v", v, err)
	}
	offs := []int64{100 * chunk, 200*chunk + 5}
	for _, off := range offs {
		if _, err := s.src.WriteAt([]byte("unlogged write"), off); err != nil {
			t.Fatal(err)
		}
	}
	v, err = snd.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Equal || v.IndexEqual || v.Source.Root == v.Replica.Root {
		t.Fatal("verify missed the unlogged writes")
	}
	var total uint64
	for _, rg := range v.IndexDiffer {
		total += rg.Len
	}
	for _, off := range offs {
		found := false
		for _, rg := range v.IndexDiffer {
			found = found || (uint64(off) >= rg.Off && uint64(off) < rg.End())
		}
		if !found {
			t.Fatalf("differing index ranges %v miss offset %d", v.IndexDiffer, off)
		}
	}
	if total != 2*chunk {
		t.Fatalf("differing index ranges %v cover %d bytes, want the 2 chunks", v.IndexDiffer, total)
	}
	want := []blockhash.Range{{Off: 100 * chunk, Len: 4096}, {Off: 200 * chunk, Len: 4096}}
	if !slices.Equal(v.Differ, want) {
		t.Fatalf("differing image ranges %v, want the 2 pages %v", v.Differ, want)
	}
	t.Logf("diff: %+v", v.Diff)
}

// TestScrubRepairOverGRPC: 1 MiB of the replica's image overwritten behind
// its index is found by the scrub over mutual-TLS gRPC, exactly; repair
// over the wire makes its regions pending, one pass sends them, and verify
// says equal.
func TestScrubRepairOverGRPC(t *testing.T) {
	const size = 8 << 20
	s := newSenderNode(t, size, 256<<10, 4096, 9)
	s.chunker = rpc.FixedChunker{Size: 4096}
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
	ctx := ctxT(t)
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(r.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte("dd if=/dev/urandom "), 1<<20/19+1)[:1<<20]
	if _, err := f.WriteAt(junk, 3<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	v, err := snd.VerifyWith(ctx, rpc.VerifyOptions{Rate: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if want := []blockhash.Range{{Off: 3 << 20, Len: 1 << 20}}; v.Equal || !slices.Equal(v.Differ, want) || v.IndexChecked {
		t.Fatalf("verify: equal %v, differ %v (want %v), index checked %v", v.Equal, v.Differ, want, v.IndexChecked)
	}
	regions, err := snd.Repair(ctx, v.Differ)
	if err != nil || len(regions) != 4 {
		t.Fatalf("repair: regions %v, %v; want the 4 regions of 256 KiB", regions, err)
	}
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	equalFiles(t, s.path, r.path)
	if v, err := snd.VerifyWith(ctx, rpc.VerifyOptions{Index: true}); err != nil || !v.Equal || !v.IndexEqual {
		t.Fatalf("after repair: %+v, %v", v, err)
	}
}
