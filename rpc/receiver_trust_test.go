package rpc

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
)

// TestReceiverDuplicateIDsPairedByLength: two chunks of an offer with the
// same id but different lengths are not one chunk: a forged offer that
// names a 1-byte chunk at the volume's end with a 4 KiB chunk's id must not
// make the receiver write 4 KiB there (4095 bytes past the end) or index
// that chunk as holding bytes it does not hold.
func TestReceiverDuplicateIDsPairedByLength(t *testing.T) {
	img := &memImage{b: make([]byte, tSize)}
	r, st := newTestReceiver(t, img)
	src := pattern(3)
	first := src[:tChunk]
	o := &Offer{Volume: tVol, VolumeSize: tSize, Params: tParams, Ranges: []Range{
		{Start: 0, End: tChunk, Chunks: []Chunk{{Offset: 0, Length: tChunk, ID: Sum(first)}}},
		{Start: tSize - 1, End: tSize, Chunks: []Chunk{{Offset: tSize - 1, Length: 1, ID: Sum(first)}}},
	}}
	b, need, err := r.Begin(context.Background(), tPeer, o)
	if err != nil {
		t.Fatal(err)
	}
	if need.Count() != 2 {
		t.Fatalf("need %d chunks, want both: a chunk of another length is not a duplicate", need.Count())
	}
	if err := b.Put(0, first); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(1, src[tSize-1:]); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("the forged 1-byte chunk: %v, want ErrHashMismatch", err)
	}
	b.Abort()
	if len(img.b) != tSize {
		t.Fatalf("image grew to %d bytes", len(img.b))
	}
	if c, ok, _ := st.ChunkAt(tVol, tSize-1); ok {
		t.Fatalf("index holds %+v for bytes never verified", c)
	}
}

// syncOnceFails is an image whose next Sync fails with EIO once, as Linux
// reports a writeback error once per file.
type syncOnceFails struct {
	*memImage
	mu   sync.Mutex
	fail bool
}

func (s *syncOnceFails) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		s.fail = false
		return syscall.EIO
	}
	return s.memImage.Sync()
}

// TestReceiverSyncErrorIsSticky: after one batch's fsync failed, no batch
// of that image is acknowledged any more, even one whose own fsync
// succeeds (its writes may have been in the pages that failed).
func TestReceiverSyncErrorIsSticky(t *testing.T) {
	img := &syncOnceFails{memImage: &memImage{b: make([]byte, tSize)}}
	r, _ := newTestReceiver(t, img.memImage)
	r.vols[tVol].Image = img
	src := pattern(4)
	begin := func(start, end uint64) (*Batch, Need, []byte, *Offer) {
		t.Helper()
		o, data := offerFor(t, src, start, end)
		b, need, err := r.Begin(context.Background(), tPeer, o)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range o.Ranges[0].Chunks {
			if need.Missing[i] {
				if err := b.Put(uint32(i), data[c.Offset-start:c.End()-start]); err != nil {
					t.Fatal(err)
				}
			}
		}
		return b, need, data, o
	}
	b1, _, _, _ := begin(0, 8*tChunk)
	b2, _, _, _ := begin(8*tChunk, 16*tChunk) // written before b1's fsync
	img.mu.Lock()
	img.fail = true
	img.mu.Unlock()
	if _, err := b1.Commit(false); !errors.Is(err, syscall.EIO) {
		t.Fatalf("first commit: %v, want EIO", err)
	}
	if _, err := b2.Commit(false); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a concurrent batch was acknowledged after its image's fsync failed: %v", err)
	}
	o, _ := offerFor(t, src, 16*tChunk, 24*tChunk)
	if _, _, err := r.Begin(context.Background(), tPeer, o); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a later batch was accepted after the image's fsync failed: %v", err)
	}
}
