package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/pebble"
)

// memImage is an in-memory replica image that counts writes.
type memImage struct {
	mu     sync.Mutex
	b      []byte
	writes int
	syncs  int
	// failWrite, if set, fails writes.
	failWrite error
}

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWrite != nil {
		return 0, m.failWrite
	}
	m.writes++
	return copy(m.b[off:], p), nil
}

func (m *memImage) Sync() error { m.mu.Lock(); m.syncs++; m.mu.Unlock(); return nil }

// fail makes the image's writes fail with err from now on (nil: succeed).
func (m *memImage) fail(err error) { m.mu.Lock(); m.failWrite = err; m.mu.Unlock() }

const (
	tVol   = "v1"
	tPeer  = "peer-a"
	tChunk = 4096
	tSize  = 64 * tChunk
)

var tParams = FixedChunker{Size: tChunk}.Params()

func newTestReceiver(t *testing.T, img *memImage) (*Receiver, *pebble.ReplicaStore) {
	t.Helper()
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := pebble.NewReplicaStore(db)
	r, err := NewReceiver(ReceiverConfig{Store: st, Volumes: []ReceiveVolume{{Name: tVol, Image: img, Size: tSize, Params: tParams, Senders: []string{tPeer}}}})
	if err != nil {
		t.Fatal(err)
	}
	return r, st
}

// offerFor builds an offer for [start, end) of src cut by FixedChunker.
func offerFor(t *testing.T, src []byte, start, end uint64) (*Offer, []byte) {
	t.Helper()
	rg, data, err := FixedChunker{Size: tChunk}.Cut(bytes.NewReader(src), uint64(len(src)), start, end)
	if err != nil {
		t.Fatal(err)
	}
	return &Offer{Volume: tVol, VolumeSize: uint64(len(src)), Params: tParams, Ranges: []Range{rg}}, data
}

func pattern(seed byte) []byte {
	b := make([]byte, tSize)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>12)
	}
	return b
}

// apply runs a whole batch the honest way.
func apply(t *testing.T, r *Receiver, o *Offer, data []byte) (Need, Ack) {
	t.Helper()
	b, need, err := r.Begin(context.Background(), tPeer, o)
	if err != nil {
		t.Fatal(err)
	}
	start := o.Ranges[0].Start
	for i, c := range o.Ranges[0].Chunks {
		if need.Missing[i] {
			if err := b.Put(uint32(i), data[c.Offset-start:c.End()-start]); err != nil {
				t.Fatal(err)
			}
		}
	}
	ack, err := b.Commit(true)
	if err != nil {
		t.Fatal(err)
	}
	return need, ack
}

func TestReceiverApply(t *testing.T) {
	img := &memImage{b: make([]byte, tSize)}
	r, _ := newTestReceiver(t, img)
	src := pattern(1)
	o, data := offerFor(t, src, 0, tSize)
	need, ack := apply(t, r, o, data)
	if need.Count() != 64 || need.Copied != 0 || need.Present != 0 {
		t.Fatalf("first batch: need %d, copied %d, present %d", need.Count(), need.Copied, need.Present)
	}
	if !bytes.Equal(img.b, src) {
		t.Fatal("replica differs after first batch")
	}
	want, _, _ := SourceRoot(FixedChunker{Size: tChunk}, bytes.NewReader(src), tSize)
	if ack.Root != want || ack.Chunks != 64 {
		t.Fatalf("ack root %v (%d chunks), want %v", ack.Root, ack.Chunks, want)
	}

	// Same data again: everything present, nothing written.
	w := img.writes
	need, _ = apply(t, r, o, data)
	if need.Count() != 0 || need.Present != 64 || img.writes != w {
		t.Fatalf("resend: need %d, present %d, writes %d", need.Count(), need.Present, img.writes-w)
	}

	// Move data: chunk 10's content now also at chunk 3 -> copied locally.
	copy(src[3*tChunk:4*tChunk], src[10*tChunk:11*tChunk])
	o, data = offerFor(t, src, 0, 8*tChunk)
	need, _ = apply(t, r, o, data)
	if need.Count() != 0 || need.Copied != 1 || need.Present != 7 {
		t.Fatalf("move: need %d, copied %d, present %d", need.Count(), need.Copied, need.Present)
	}
	if !bytes.Equal(img.b, src) {
		t.Fatal("replica differs after a local copy")
	}

	// In-batch duplicates: four equal chunks are sent once.
	for i := 16; i < 20; i++ {
		copy(src[i*tChunk:(i+1)*tChunk], bytes.Repeat([]byte{0xAB}, tChunk))
	}
	o, data = offerFor(t, src, 16*tChunk, 20*tChunk)
	need, _ = apply(t, r, o, data)
	if need.Count() != 1 {
		t.Fatalf("dedup: need %d, want 1", need.Count())
	}
	if !bytes.Equal(img.b, src) {
		t.Fatal("replica differs after dedup")
	}
}

// TestReceiverBadInput: every malformed offer or chunk is refused with its
// sentinel and nothing of it reaches the image or the index.
func TestReceiverBadInput(t *testing.T) {
	src := pattern(2)
	good := func() (*Offer, []byte) { return offerFor(t, src, 4*tChunk, 8*tChunk) }
	for _, tc := range []struct {
		name   string
		mutate func(o *Offer)
		put    func(b *Batch, data []byte) error // after a valid Begin
		want   error
	}{
		{name: "volume size", mutate: func(o *Offer) { o.VolumeSize *= 2 }, want: ErrVolumeMismatch},
		{name: "chunk params", mutate: func(o *Offer) { o.Params.Avg = 8192 }, want: ErrParamsMismatch},
		{name: "algorithm", mutate: func(o *Offer) { o.Params.Algorithm = "fastcdc" }, want: ErrParamsMismatch},
		{name: "unknown volume", mutate: func(o *Offer) { o.Volume = "other" }, want: ErrUnknownVolume},
		{name: "offset past end", mutate: func(o *Offer) {
			o.Ranges[0].Start, o.Ranges[0].End = tSize, tSize+4*tChunk
			for i := range o.Ranges[0].Chunks {
				o.Ranges[0].Chunks[i].Offset = tSize + uint64(i)*tChunk
			}
		}, want: ErrBadOffer},
		{name: "oversized chunk", mutate: func(o *Offer) {
			c := &o.Ranges[0].Chunks
			(*c)[0].Length = 2 * tChunk
			*c = append((*c)[:1], (*c)[3:]...)
			(*c)[1].Offset = o.Ranges[0].Start + 2*tChunk
		}, want: ErrChunkSize},
		{name: "gap in chunks", mutate: func(o *Offer) { o.Ranges[0].Chunks[1].Offset += 1 }, want: ErrBadOffer},
		{name: "no ranges", mutate: func(o *Offer) { o.Ranges = nil }, want: ErrBadOffer},
		{name: "overlapping ranges", mutate: func(o *Offer) { o.Ranges = append(o.Ranges, o.Ranges[0]) }, want: ErrBadOffer},
		{name: "wrong hash", put: func(b *Batch, d []byte) error {
			bad := bytes.Clone(d[:tChunk])
			bad[100] ^= 1
			return b.Put(0, bad)
		}, want: ErrHashMismatch},
		{name: "bad chunk inside a run", put: func(b *Batch, d []byte) error {
			bad := bytes.Clone(d[:3*tChunk])
			bad[2*tChunk+5] ^= 1
			return b.Put(0, bad)
		}, want: ErrHashMismatch},
		{name: "run past its range", put: func(b *Batch, d []byte) error {
			return b.Put(2, append(bytes.Clone(d[2*tChunk:]), d[:tChunk]...))
		}, want: ErrProtocol},
		{name: "oversized data", put: func(b *Batch, d []byte) error { return b.Put(0, d[:tChunk+1]) }, want: ErrChunkSize},
		{name: "short data", put: func(b *Batch, d []byte) error { return b.Put(0, d[:tChunk-1]) }, want: ErrChunkSize},
		{name: "unrequested index", put: func(b *Batch, d []byte) error { return b.Put(4, d[:tChunk]) }, want: ErrProtocol},
		{name: "done early", put: func(b *Batch, d []byte) error { _, err := b.Commit(true); return err }, want: ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := &memImage{b: make([]byte, tSize)}
			r, st := newTestReceiver(t, img)
			o, data := good()
			if tc.mutate != nil {
				tc.mutate(o)
				_, _, err := r.Begin(context.Background(), tPeer, o)
				if !errors.Is(err, tc.want) {
					t.Fatalf("Begin: %v, want %v", err, tc.want)
				}
				if ms, _ := st.Applying(tVol); len(ms) != 0 {
					t.Fatalf("refused offer left %d applying markers", len(ms))
				}
			} else {
				b, _, err := r.Begin(context.Background(), tPeer, o)
				if err != nil {
					t.Fatal(err)
				}
				err = tc.put(b, data)
				if !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
				b.Abort()
			}
			if img.writes != 0 || !bytes.Equal(img.b, make([]byte, tSize)) {
				t.Fatalf("%d writes reached the image", img.writes)
			}
			n := 0
			st.Chunks(tVol, func(pebble.ReplicaChunk) error { n++; return nil })
			if n != 0 {
				t.Fatalf("index has %d entries", n)
			}
			if ms, _ := st.Applying(tVol); len(ms) != 0 {
				t.Fatalf("%d applying markers after a batch that wrote nothing", len(ms))
			}
			// The volume is free again for a good batch.
			o, data = good()
			apply(t, r, o, data)
		})
	}
}

func TestReceiverPermission(t *testing.T) {
	img := &memImage{b: make([]byte, tSize)}
	r, _ := newTestReceiver(t, img)
	o, _ := offerFor(t, pattern(3), 0, tChunk)
	if _, _, err := r.Begin(context.Background(), "peer-b", o); !errors.Is(err, ErrPermission) {
		t.Fatalf("unlisted sender: %v", err)
	}
	if r.KnownSender("peer-b") || !r.KnownSender(tPeer) {
		t.Fatal("KnownSender wrong")
	}
	if img.writes != 0 {
		t.Fatal("image written")
	}
}

// TestReceiverFailedBatchMarksApplying: a batch that wrote and then failed
// (disk full) leaves the replica marked applying with no index for its
// ranges, until a batch covering them commits.
func TestReceiverFailedBatchMarksApplying(t *testing.T) {
	img := &memImage{b: make([]byte, tSize)}
	r, st := newTestReceiver(t, img)
	src := pattern(4)
	o, data := offerFor(t, src, 0, tSize)
	apply(t, r, o, data)
	// Random bytes: pattern's chunks recur at other offsets (it XORs the
	// chunk index), which the receiver would now copy locally.
	src2 := randomVolume(rand.New(rand.NewPCG(5, 5)), tSize)
	o, data = offerFor(t, src2, 0, 8*tChunk)
	b, need, err := r.Begin(context.Background(), tPeer, o)
	if err != nil {
		t.Fatal(err)
	}
	if need.Count() != 8 {
		t.Fatalf("need %d", need.Count())
	}
	if err := b.Put(0, data[:tChunk]); err != nil {
		t.Fatal(err)
	}
	img.fail(fmt.Errorf("write: %w", syscall.ENOSPC))
	// Writes run behind Put: the failure fails a later Put or the Commit.
	err = b.Put(1, data[tChunk:2*tChunk])
	for i := 2; err == nil && i < 8; i++ {
		err = b.Put(uint32(i), data[i*tChunk:(i+1)*tChunk])
	}
	if err == nil {
		_, err = b.Commit(false)
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("disk full: %v", err)
	}
	b.Abort()
	info, err := r.Root(tPeer, tVol)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Applying || info.Chunks != 56 {
		t.Fatalf("after failed batch: applying %v, chunks %d", info.Applying, info.Chunks)
	}
	// Restart: the marker survives and recovery is idempotent.
	r2, err := NewReceiver(ReceiverConfig{Store: st, Volumes: []ReceiveVolume{{Name: tVol, Image: img, Size: tSize, Senders: []string{tPeer}}}})
	if err != nil {
		t.Fatal(err)
	}
	img.fail(nil)
	apply(t, r2, o, data)
	info, _ = r2.Root(tPeer, tVol)
	if info.Applying || info.Chunks != 64 {
		t.Fatalf("after retry: applying %v, chunks %d", info.Applying, info.Chunks)
	}
	copy(src[:8*tChunk], src2[:8*tChunk])
	if !bytes.Equal(img.b, src) {
		t.Fatal("replica differs after retry")
	}
	// Params adopted from the store after restart (configured zero).
	o.Params.Max++
	if _, _, err := r2.Begin(context.Background(), tPeer, o); !errors.Is(err, ErrParamsMismatch) {
		t.Fatalf("params after restart: %v", err)
	}
}

// TestReceiverCrashRecovery: a receiver that stops mid-batch (no Abort, no
// Commit) leaves its marker; the next receiver over the same store drops the
// index of the marked ranges, reports applying, and a full batch clears it.
func TestReceiverCrashRecovery(t *testing.T) {
	img := &memImage{b: make([]byte, tSize)}
	r, st := newTestReceiver(t, img)
	src := pattern(6)
	o, data := offerFor(t, src, 0, tSize)
	apply(t, r, o, data)
	src2 := randomVolume(rand.New(rand.NewPCG(7, 7)), tSize)
	o, data = offerFor(t, src2, 8*tChunk, 16*tChunk)
	b, _, err := r.Begin(context.Background(), tPeer, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(2, data[2*tChunk:3*tChunk]); err != nil {
		t.Fatal(err)
	}
	// Crash: b is neither committed nor aborted.
	r2, err := NewReceiver(ReceiverConfig{Store: st, Volumes: []ReceiveVolume{{Name: tVol, Image: img, Size: tSize, Senders: []string{tPeer}}}})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := r2.Root(tPeer, tVol)
	if !info.Applying || info.Chunks != 56 {
		t.Fatalf("after crash: applying %v, chunks %d (want true, 56)", info.Applying, info.Chunks)
	}
	// The old content is offered again (the sender's source did not change
	// in this story): chunk 2's bytes changed under the index, so it must
	// be asked for, not taken as present.
	o, data = offerFor(t, src, 8*tChunk, 16*tChunk)
	need, _ := apply(t, r2, o, data)
	if !need.Missing[2] {
		t.Fatal("chunk rewritten by the crashed batch was taken as present")
	}
	info, _ = r2.Root(tPeer, tVol)
	want, _, _ := SourceRoot(FixedChunker{Size: tChunk}, bytes.NewReader(src), tSize)
	if info.Applying || info.Root != want || !bytes.Equal(img.b, src) {
		t.Fatalf("after recovery batch: applying %v, root ok %v, bytes ok %v", info.Applying, info.Root == want, bytes.Equal(img.b, src))
	}
}

// FuzzReceiverOffer feeds arbitrary offers and chunk data to a receiver:
// it must never panic, a refused offer leaves no trace, and no data that
// does not hash to its id is ever written.
func FuzzReceiverOffer(f *testing.F) {
	f.Add([]byte{0, 0, 16, 0, 0, 1}, uint64(0), []byte("data"))
	f.Add([]byte{1, 0, 1, 0, 0, 1, 0, 1, 0, 0}, uint64(4*tChunk), make([]byte, tChunk))
	img := &memImage{b: make([]byte, tSize)}
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	st := pebble.NewReplicaStore(db)
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, spec []byte, start uint64, data []byte) {
		img.writes = 0
		vol := fmt.Sprintf("fuzz-%d", n.Add(1)) // a fresh replica per input
		r, err := NewReceiver(ReceiverConfig{Store: st, Volumes: []ReceiveVolume{{Name: vol, Image: img, Size: tSize, Params: tParams, Senders: []string{tPeer}}}})
		if err != nil {
			t.Fatal(err)
		}
		// spec: per chunk 3 bytes: length in 16-byte units (2 bytes), id seed.
		o := &Offer{Volume: vol, VolumeSize: tSize, Params: tParams}
		rg := Range{Start: start % (tSize + tChunk)}
		pos := rg.Start
		for i := 0; i+3 <= len(spec) && i < 3*64; i += 3 {
			l := uint32(spec[i])<<8 | uint32(spec[i+1])
			c := Chunk{Offset: pos, Length: l * 16}
			c.ID[0] = spec[i+2]
			if spec[i+2] == 0 && int(c.Length) <= len(data) {
				c.ID = Sum(data[:c.Length]) // sometimes honest
			}
			rg.Chunks = append(rg.Chunks, c)
			pos += uint64(c.Length)
		}
		rg.End = pos
		o.Ranges = []Range{rg}
		b, need, err := r.Begin(context.Background(), tPeer, o)
		if err != nil {
			if img.writes != 0 {
				t.Fatalf("refused offer (%v) wrote", err)
			}
			if ms, _ := st.Applying(vol); len(ms) != 0 {
				t.Fatalf("refused offer (%v) left a marker", err)
			}
			return
		}
		defer b.Abort()
		for i, m := range need.Missing {
			if !m {
				continue
			}
			c := rg.Chunks[i]
			before := img.writes
			err := b.Put(uint32(i), data)
			if err == nil && (uint32(len(data)) < c.Length || Sum(data[:c.Length]) != c.ID) {
				t.Fatalf("chunk %d accepted with wrong data", i)
			}
			if err != nil && img.writes != before {
				t.Fatalf("refused chunk %d (%v) wrote", i, err)
			}
		}
	})
}

// offerWithBlocks is offerFor with 16 KiB chunks carrying block fingerprints.
func offerWithBlocks(t *testing.T, src []byte, start, end uint64) (*Offer, []byte) {
	t.Helper()
	rg, data, err := FixedChunker{Size: 4 * tChunk}.Cut(bytes.NewReader(src), uint64(len(src)), start, end)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range rg.Chunks {
		rg.Chunks[i].Blocks = blockhash.BlockFingerprints(c.Offset, data[c.Offset-rg.Start:c.End()-rg.Start])
	}
	return &Offer{Volume: tVol, VolumeSize: uint64(len(src)), Params: FixedChunker{Size: 4 * tChunk}.Params(), Ranges: []Range{rg}}, data
}

func TestReceiverBlockDelta(t *testing.T) {
	for _, corrupt := range []bool{false, true} {
		img := &memImage{b: make([]byte, tSize)}
		db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		r, err := NewReceiver(ReceiverConfig{Store: pebble.NewReplicaStore(db), Volumes: []ReceiveVolume{{Name: tVol, Image: img, Size: tSize, Senders: []string{tPeer}}}})
		if err != nil {
			t.Fatal(err)
		}
		src := pattern(8)
		o, data := offerWithBlocks(t, src, 0, tSize)
		b, need, err := r.Begin(context.Background(), tPeer, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(need.Blocks) != 0 {
			t.Fatal("block masks for a replica that held nothing")
		}
		if err := b.Put(0, data); err == nil {
			_, err = b.Commit(false)
		}
		if err != nil {
			t.Fatal(err)
		}
		// One byte changes in block 1 of chunk 2, and all of chunk 5.
		src[2*4*tChunk+tChunk+7] ^= 0xff
		copy(src[5*4*tChunk:6*4*tChunk], pattern(9))
		o, data = offerWithBlocks(t, src, 0, 8*4*tChunk)
		b, need, err = r.Begin(context.Background(), tPeer, o)
		if err != nil {
			t.Fatal(err)
		}
		if need.Count() != 2 || !slices.Equal(need.Blocks[2], []bool{false, true, false, false}) || need.Blocks[5] != nil {
			t.Fatalf("need %d chunks, masks %v", need.Count(), need.Blocks)
		}
		wrote0 := r.Stats().InPlace
		blk := bytes.Clone(data[2*4*tChunk+tChunk : 2*4*tChunk+2*tChunk])
		if corrupt {
			blk[0] ^= 1
		}
		if err := b.PutBlocks(2, blk); err != nil {
			t.Fatal(err)
		}
		if err := b.Put(5, data[5*4*tChunk:6*4*tChunk]); err != nil {
			t.Fatal(err)
		}
		retry := b.Retry()
		if corrupt != (len(retry) == 1) {
			t.Fatalf("corrupt %v: retry %v", corrupt, retry)
		}
		if corrupt {
			if !bytes.Equal(img.b[2*4*tChunk:3*4*tChunk], pattern(8)[2*4*tChunk:3*4*tChunk]) {
				t.Fatal("a patched chunk that did not verify was written")
			}
			if _, err := b.Commit(false); !errors.Is(err, ErrProtocol) {
				t.Fatalf("commit with a chunk to resend: %v", err)
			}
			continue
		}
		if _, err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(img.b, src) {
			t.Fatal("replica differs after patching")
		}
		// The patched chunk wrote its changed block only.
		if w := r.Stats().InPlace - wrote0; w != 5*tChunk {
			t.Fatalf("the batch wrote %d bytes, want %d (one block, one whole chunk)", w, 5*tChunk)
		}
	}
}

// TestReceiverConcurrentBatches: batches on disjoint ranges run at once; an
// overlapping one waits until the batch it overlaps ends.
func TestReceiverConcurrentBatches(t *testing.T) {
	img := &memImage{b: make([]byte, tSize)}
	r, _ := newTestReceiver(t, img)
	src := pattern(10)
	oa, _ := offerFor(t, src, 0, 8*tChunk)
	ob, _ := offerFor(t, src, 8*tChunk, 16*tChunk)
	oc, _ := offerFor(t, src, 4*tChunk, 12*tChunk)
	a, _, err := r.Begin(context.Background(), tPeer, oa)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := r.Begin(context.Background(), tPeer, ob)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := r.Begin(ctx, tPeer, oc); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("overlapping batch: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		c, _, err := r.Begin(context.Background(), tPeer, oc)
		if err == nil {
			c.Abort()
		}
		got <- err
	}()
	a.Abort()
	select {
	case err := <-got:
		t.Fatalf("overlapping batch started while b still runs: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.Abort()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}
