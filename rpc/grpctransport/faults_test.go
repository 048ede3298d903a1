package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/dmsync/dmsync/rpc"
)

// cutDialer dials TCP and cuts each connection after a random number of
// bytes (read plus written), at most maxCuts times in all.
type cutDialer struct {
	mu      sync.Mutex
	rng     *rand.Rand
	maxCut  int64
	cutsLft int
	cuts    atomic.Int64
}

func (d *cutDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cutsLft == 0 {
		return c, nil
	}
	d.cutsLft--
	return &cutConn{Conn: c, budget: d.rng.Int64N(d.maxCut), d: d}, nil
}

type cutConn struct {
	net.Conn
	mu     sync.Mutex
	budget int64
	d      *cutDialer
	cut    bool
}

func (c *cutConn) spend(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return net.ErrClosed
	}
	c.budget -= int64(n)
	if c.budget < 0 {
		c.cut = true
		c.d.cuts.Add(1)
		c.Conn.Close()
		return net.ErrClosed
	}
	return nil
}

func (c *cutConn) Read(p []byte) (int, error) {
	if err := c.spend(0); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if err == nil {
		if serr := c.spend(n); serr != nil {
			return 0, serr
		}
	}
	return n, err
}

func (c *cutConn) Write(p []byte) (int, error) {
	if err := c.spend(len(p)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// TestCutConnection cuts the connection at random points, many seeds: the
// replica converges and no region is marked replicated before its bytes
// reached the replica.
func TestCutConnection(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 3
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			const size = 4 << 20
			s := newSenderNode(t, size, 128<<10, 16<<10, seed)
			r := newReceiverNode(t, size, s.id.ID)
			r.start()
			checkReplicatedEarly(t, s, r)
			d := &cutDialer{rng: rand.New(rand.NewPCG(seed, 2)), maxCut: 3 << 20, cutsLft: 6}
			snd := s.sender(s.dial(r, DialOptions{Dialer: d.dial}), r.id.ID)
			ctx := ctxT(t)
			st, err := snd.RunOnce(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Acked batches are not sent again: beyond the volume, only
			// batches in flight at a cut (≤ 2 of 1 MiB each) may repeat.
			if limit := uint64(size) + uint64(d.cuts.Load())*2<<20; st.BytesSent > limit {
				t.Fatalf("sent %d bytes for a %d-byte volume with %d cuts", st.BytesSent, size, d.cuts.Load())
			}
			s.randomWrites(30)
			d.mu.Lock()
			d.cutsLft = 3
			d.mu.Unlock()
			if _, err := snd.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			equalFiles(t, s.path, r.path)
			allReplicated(t, s)
			if v, err := snd.Verify(ctx); err != nil || !v.Equal {
				t.Fatalf("verify: %+v, %v", v, err)
			}
			t.Logf("cuts %d, failures %d, batches %d", d.cuts.Load(), snd.Stats().Failures, snd.Stats().Batches)
		})
	}
}

// recordingTransport records the errors a transport returns and can corrupt
// chunk data on its way out.
type recordingTransport struct {
	rpc.Transport
	mu      sync.Mutex
	errs    []error
	corrupt func() bool // called per Send: true flips a byte
	// corruptBlocks, called per SendBlocks: true flips a byte.
	corruptBlocks func() bool
}

func (r *recordingTransport) rec(err error) error {
	if err != nil {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
	}
	return err
}

func (r *recordingTransport) sawErr(target error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		if errors.Is(e, target) {
			return true
		}
	}
	return false
}

func (r *recordingTransport) Apply(ctx context.Context) (rpc.ApplyStream, error) {
	st, err := r.Transport.Apply(ctx)
	if err != nil {
		return nil, r.rec(err)
	}
	return &recordingStream{ApplyStream: st, t: r}, nil
}

type recordingStream struct {
	rpc.ApplyStream
	t *recordingTransport
}

func (s *recordingStream) Offer(o *rpc.Offer) (rpc.Need, error) {
	n, err := s.ApplyStream.Offer(o)
	return n, s.t.rec(err)
}

func (s *recordingStream) Send(i uint32, data []byte) error {
	if s.t.corrupt != nil && s.t.corrupt() {
		data = append([]byte(nil), data...)
		data[len(data)/2] ^= 0x40
	}
	return s.t.rec(s.ApplyStream.Send(i, data))
}

func (s *recordingStream) SendBlocks(i uint32, data []byte) error {
	if s.t.corruptBlocks != nil && len(data) > 0 && s.t.corruptBlocks() {
		data = append([]byte(nil), data...)
		data[len(data)/2] ^= 0x40
	}
	return s.t.rec(s.ApplyStream.SendBlocks(i, data))
}

func (s *recordingStream) Finish(wantRoot bool) (rpc.Ack, []int, error) {
	a, resend, err := s.ApplyStream.Finish(wantRoot)
	return a, resend, s.t.rec(err)
}

func TestCorruptChunkInFlight(t *testing.T) {
	const size = 4 << 20
	s := newSenderNode(t, size, 128<<10, 16<<10, 7)
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	checkReplicatedEarly(t, s, r)
	var sends atomic.Int64
	tr := &recordingTransport{Transport: s.dial(r, DialOptions{}), corrupt: func() bool {
		n := sends.Add(1)
		return n == 2 || n == 6 || n == 7 || n == 12
	}}
	snd := s.sender(tr, r.id.ID)
	ctx := ctxT(t)
	if _, err := snd.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	equalFiles(t, s.path, r.path)
	allReplicated(t, s)
	if !tr.sawErr(rpc.ErrHashMismatch) {
		t.Fatalf("no hash mismatch reported; errors: %v", tr.errs)
	}
	if !strings.Contains(r.logBuf.String(), "refused chunk") {
		t.Fatal("receiver did not log the refused chunk")
	}
	if snd.Stats().Failures < 2 {
		t.Fatalf("only %d failures for corrupted sends in 2+ batches", snd.Stats().Failures)
	}
}

// faultImage wraps a replica file.
type faultImage struct {
	rpc.Image
	hook func(off int64, n int) error
}

func (f *faultImage) WriteAt(p []byte, off int64) (int, error) {
	if err := f.hook(off, len(p)); err != nil {
		return 0, err
	}
	return f.Image.WriteAt(p, off)
}

func TestReceiverDiskFull(t *testing.T) {
	const size = 4 << 20
	s := newSenderNode(t, size, 128<<10, 16<<10, 9)
	r := newReceiverNode(t, size, s.id.ID)
	var writes atomic.Int64
	r.wrap = func(img rpc.Image) rpc.Image {
		return &faultImage{Image: img, hook: func(int64, int) error {
			if n := writes.Add(1); n >= 20 && n < 30 {
				return &net.OpError{Op: "write", Err: syscall.ENOSPC} // any wrapper of ENOSPC
			}
			return nil
		}}
	}
	r.start()
	checkReplicatedEarly(t, s, r)
	tr := &recordingTransport{Transport: s.dial(r, DialOptions{})}
	snd := s.sender(tr, r.id.ID)
	if _, err := snd.RunOnce(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	equalFiles(t, s.path, r.path)
	allReplicated(t, s)
	if !tr.sawErr(rpc.ErrNoSpace) {
		t.Fatalf("disk full not reported as ErrNoSpace: %v", tr.errs)
	}
	if info := r.root(); info.Applying {
		t.Fatal("replica still marked applying after convergence")
	}
}

func TestReceiverRestartMidBatch(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			const size = 4 << 20
			s := newSenderNode(t, size, 128<<10, 16<<10, 100+seed)
			r := newReceiverNode(t, size, s.id.ID)
			rng := rand.New(rand.NewPCG(seed, 3))
			var writes atomic.Int64
			var crashed atomic.Bool
			restart := make(chan struct{}, 1)
			at := 1 + rng.Int64N(12)
			failAfter := seed%2 == 0 // even seeds: the crashing process writes nothing more
			r.wrap = func(img rpc.Image) rpc.Image {
				return &faultImage{Image: img, hook: func(int64, int) error {
					if crashed.Load() && failAfter {
						return io.ErrClosedPipe
					}
					if writes.Add(1) == at {
						crashed.Store(true)
						restart <- struct{}{}
						if failAfter {
							return io.ErrClosedPipe // this write never lands
						}
					}
					return nil
				}}
			}
			r.start()
			checkReplicatedEarly(t, s, r)
			snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
			ctx := ctxT(t)
			done := make(chan error, 1)
			go func() { _, err := snd.RunOnce(ctx); done <- err }()
			select {
			case <-restart:
				r.stop()
				crashed.Store(false)
				r.start()
			case err := <-done:
				t.Fatalf("finished before the restart (at write %d): %v", at, err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			equalFiles(t, s.path, r.path)
			allReplicated(t, s)
			if v, err := snd.Verify(ctx); err != nil || !v.Equal {
				t.Fatalf("verify: %+v, %v", v, err)
			}
			if failAfter && !strings.Contains(r.logBuf.String(), "half applied") {
				t.Fatal("the restarted receiver did not find the half-applied batch")
			}
		})
	}
}
