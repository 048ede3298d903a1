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
