package rpc

import (
	"context"
	"sync"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
)

// countingPacer records what a scrub asked its pacer for.
type countingPacer struct {
	mu          sync.Mutex
	bytesPerSec uint64
	burst       int
	waited      uint64 // bytes asked for
	calls       int
	over        int // asks above the burst (a rate.Limiter refuses those)
}

func (p *countingPacer) WaitN(_ context.Context, n int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waited += uint64(n)
	p.calls++
	if n > p.burst {
		p.over++
	}
	return nil
}

// readCounter is an image that counts the bytes read from it, and checks
// that no byte is read before the pacer allowed it.
type readCounter struct {
	*memImage
	mu    sync.Mutex
	read  uint64
	pacer *countingPacer
	early int
}

func (c *readCounter) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.read += uint64(len(p))
	c.pacer.mu.Lock()
	if c.read > c.pacer.waited {
		c.early++
	}
	c.pacer.mu.Unlock()
	c.mu.Unlock()
	return c.memImage.ReadAt(p, off)
}

// TestScrubPacesEveryRead: every byte the scrub reads of the image was
// asked of a pacer made with the request's rate (or the default rate),
// before it was read, in asks no larger than the burst. Counted, not timed.
func TestScrubPacesEveryRead(t *testing.T) {
	const size = 5<<20 + 4096
	var pacers []*countingPacer
	var img *readCounter
	old := newScrubPacer
	t.Cleanup(func() { newScrubPacer = old })
	newScrubPacer = func(bps uint64, burst int) waiter {
		p := &countingPacer{bytesPerSec: bps, burst: burst}
		pacers = append(pacers, p)
		img.pacer = p
		return p
	}
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	img = &readCounter{memImage: &memImage{b: make([]byte, size)}}
	r, err := NewReceiver(ReceiverConfig{Store: pebble.NewReplicaStore(db), Volumes: []ReceiveVolume{{Name: tVol, Image: img, Size: size, Senders: []string{tPeer}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rate, wantRate uint64
		piece          uint32
	}{{12345 << 10, 12345 << 10, 4096}, {0, DefaultScrubRate, 0}} {
		img.read, img.early = 0, 0
		img.pacer = nil
		var hashed uint64
		pacerBefore := len(pacers)
		err := r.Scrub(context.Background(), tPeer, ScrubRequest{Volume: tVol, Piece: c.piece, Rate: c.rate}, func(d ScrubDigests) error {
			hashed += d.End - d.Offset
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(pacers) != pacerBefore+1 {
			t.Fatalf("rate %d: %d pacers made, want 1", c.rate, len(pacers)-pacerBefore)
		}
		p := pacers[len(pacers)-1]
		if p.bytesPerSec != c.wantRate || p.burst != scrubIO {
			t.Errorf("rate %d: pacer of %d B/s, burst %d; want %d B/s, burst %d", c.rate, p.bytesPerSec, p.burst, c.wantRate, scrubIO)
		}
		if p.waited != size || img.read != size || hashed != size {
			t.Errorf("rate %d: paced %d bytes, read %d, hashed %d; want %d each", c.rate, p.waited, img.read, hashed, size)
		}
		if img.early != 0 || p.over != 0 || p.calls != 6 {
			t.Errorf("rate %d: %d reads before their pace, %d asks over the burst, %d asks (want 0, 0, 6)", c.rate, img.early, p.over, p.calls)
		}
	}
}

// TestScrubRateCap: a peer asking for more than the receiver's cap gets
// the cap, and the cap paces every byte of all scrubs together (two at
// once here). Counted, not timed.
func TestScrubRateCap(t *testing.T) {
	const size = 3 << 20
	var mu sync.Mutex
	var pacers []*countingPacer
	old := newScrubPacer
	t.Cleanup(func() { newScrubPacer = old })
	newScrubPacer = func(bps uint64, burst int) waiter {
		mu.Lock()
		defer mu.Unlock()
		p := &countingPacer{bytesPerSec: bps, burst: burst}
		pacers = append(pacers, p)
		return p
	}
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := pebble.NewReplicaStore(db)
	vols := []ReceiveVolume{
		{Name: "a", Image: &memImage{b: make([]byte, size)}, Size: size, Senders: []string{tPeer}},
		{Name: "b", Image: &memImage{b: make([]byte, size)}, Size: size, Senders: []string{tPeer}},
	}
	if _, err := NewReceiver(ReceiverConfig{Store: st, Volumes: vols, MaxScrubRate: MinScrubRate - 1}); err == nil {
		t.Fatal("a cap below MinScrubRate was accepted")
	}
	pacers = nil
	const cap = 2 << 20
	r, err := NewReceiver(ReceiverConfig{Store: st, Volumes: vols, MaxScrubRate: cap})
	if err != nil {
		t.Fatal(err)
	}
	if len(pacers) != 1 || pacers[0].bytesPerSec != cap || pacers[0].burst < MaxScrubPiece {
		t.Fatalf("receiver-wide pacer: %+v", pacers)
	}
	shared := pacers[0]
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, v := range []string{"a", "b"} {
		wg.Go(func() {
			errs[i] = r.Scrub(context.Background(), tPeer, ScrubRequest{Volume: v, Rate: 100 << 20}, func(ScrubDigests) error { return nil })
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(pacers) != 3 {
		t.Fatalf("%d pacers, want the receiver's and one per scrub", len(pacers))
	}
	for _, p := range pacers[1:] {
		if p.bytesPerSec != cap || p.waited != size {
			t.Errorf("scrub pacer of %d B/s paced %d bytes; want the cap %d and %d bytes", p.bytesPerSec, p.waited, cap, size)
		}
	}
	if shared.waited != 2*size || shared.over != 0 {
		t.Errorf("the cap paced %d bytes (%d asks over its burst); want %d", shared.waited, shared.over, 2*size)
	}
}
