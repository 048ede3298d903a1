package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

const (
	sVol    = "vol"
	sPeer   = "node-a"
	sRegion = 64 << 10
)

// memImage is an in-memory replica image.
type memImage struct {
	mu sync.Mutex
	b  []byte
}

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}

func (m *memImage) Sync() error { return nil }

func (m *memImage) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.b)
}

// rig is a sender and a receiver joined by rpctest.Transport.
type rig struct {
	src  []byte
	img  *memImage
	log  *rpctest.FakeLog
	tr   *rpctest.Transport
	size uint64
}

func newRig(t *testing.T, size, recvSize uint64) *rig {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(size), 7))
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	img := &memImage{b: make([]byte, recvSize)}
	recv, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: pebble.NewReplicaStore(db), Volumes: []rpc.ReceiveVolume{{Name: sVol, Image: img, Size: recvSize, Senders: []string{sPeer}}}})
	if err != nil {
		t.Fatal(err)
	}
	log := rpctest.NewFakeLog()
	log.AddVolume(sVol, sRegion, (size+sRegion-1)/sRegion)
	return &rig{src: src, img: img, log: log, tr: &rpctest.Transport{Recv: recv, Peer: sPeer}, size: size}
}

func (r *rig) sender(t *testing.T, src interface {
	ReadAt([]byte, int64) (int, error)
}, progress func(rpc.SenderStatus)) *rpc.Sender {
	t.Helper()
	if src == nil {
		src = bytes.NewReader(r.src)
	}
	s, err := rpc.NewSender(rpc.SenderConfig{
		Volume: sVol, Peer: sPeer, Source: src, Size: r.size, Log: r.log, Chunker: rpc.FixedChunker{Size: 4096},
		Transport: r.tr, MaxBatchBytes: 2 * sRegion, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		MaxAttempts: 50, OnProgress: progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (r *rig) pending(t *testing.T) int {
	t.Helper()
	p, err := r.log.Pending(sVol)
	if err != nil {
		t.Fatal(err)
	}
	return len(p)
}

// TestSenderRunProgress: Run sends everything, and its progress reports
// carry a rate, the pass's size and an ETA while the first pass runs, not
// only after it.
func TestSenderRunProgress(t *testing.T) {
	const size = 1 << 20
	r := newRig(t, size, size)
	var mu sync.Mutex
	var reports []rpc.SenderStatus
	s := r.sender(t, nil, func(st rpc.SenderStatus) {
		mu.Lock()
		reports = append(reports, st)
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for r.pending(t) > 0 || s.Stats().Passes == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not replicated: %d regions pending", r.pending(t))
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if !bytes.Equal(r.img.bytes(), r.src) {
		t.Fatal("replica differs from the source")
	}
	mu.Lock()
	defer mu.Unlock()
	mid := 0
	for _, st := range reports {
		if st.State == "sending" && st.BytesToGo > 0 && st.BytesToGo < size {
			mid++
			if st.Rate <= 0 || st.ETA <= 0 || st.PassBytes != size || st.Done() <= 0 {
				t.Fatalf("mid-pass report without rate, ETA or progress: %+v", st)
			}
		}
	}
	if mid == 0 {
		t.Fatalf("no report mid-pass among %d", len(reports))
	}
	if last := reports[len(reports)-1]; last.State != "idle" || last.BytesToGo != 0 {
		t.Fatalf("last report %+v, want idle with nothing to go", last)
	}
}

// TestSenderRetriesFaults: failed offers, sends and acks are retried with
// backoff by the one retry loop; nothing is lost and no region is marked
// replicated unless its batch was acknowledged.
func TestSenderRetriesFaults(t *testing.T) {
	const size = 1 << 20
	r := newRig(t, size, size)
	fail := map[string]map[int]bool{"offer": {2: true}, "send": {5: true, 6: true}, "finish": {1: true, 4: true}}
	var fired atomic.Int64
	r.tr.Fault = func(op string, n int) error {
		if fail[op][n] {
			fired.Add(1)
			return syscall.ECONNRESET
		}
		return nil
	}
	r.log.OnReplicated = func(_ string, region, _ uint64) error {
		lo, hi := region*sRegion, min((region+1)*sRegion, size)
		if !bytes.Equal(r.img.bytes()[lo:hi], r.src[lo:hi]) {
			t.Errorf("region %d marked replicated before the replica held it", region)
		}
		return nil
	}
	st, err := r.sender(t, nil, nil).RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Faults in one pass fail it once; every fault fired.
	if n := int(fired.Load()); n != 5 || st.Failures < 2 || st.Failures > n || r.pending(t) != 0 {
		t.Fatalf("%d faults fired (want 5), %d failed passes, %d regions pending", n, st.Failures, r.pending(t))
	}
	if !bytes.Equal(r.img.bytes(), r.src) {
		t.Fatal("replica differs from the source")
	}
}

// TestSenderStopsOnPermanent: a refusal no retry can fix ends Run at once.
func TestSenderStopsOnPermanent(t *testing.T) {
	r := newRig(t, 1<<20, 2<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := r.sender(t, nil, nil)
	if err := s.Run(ctx); !errors.Is(err, rpc.ErrVolumeMismatch) {
		t.Fatalf("Run = %v, want ErrVolumeMismatch", err)
	}
	if st, _ := s.Status(); st.State == "" || st.State[:7] != "stopped" {
		t.Fatalf("state %q, want stopped", st.State)
	}
	if r.tr.Count("offer") != 1 {
		t.Fatalf("%d offers, want 1", r.tr.Count("offer"))
	}
}

type eioReader struct{}

func (eioReader) ReadAt([]byte, int64) (int, error) { return 0, syscall.EIO }

// TestSenderStopsOnSourceError: a source that cannot be read ends Run with
// ErrSource (its owner reopens the volume) and marks nothing replicated.
func TestSenderStopsOnSourceError(t *testing.T) {
	r := newRig(t, 1<<20, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.sender(t, eioReader{}, nil).Run(ctx)
	if !errors.Is(err, rpc.ErrSource) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Run = %v, want ErrSource wrapping EIO", err)
	}
	if r.pending(t) != 16 {
		t.Fatalf("%d regions pending, want all 16", r.pending(t))
	}
}

// TestSenderOffersOnlyChangedChunks: after a pass, A hashes and offers only
// the chunks whose fingerprint moved; a region rewritten with the bytes the
// peer already acknowledged is marked replicated without a batch; after a
// failure every chunk of a pending region is offered again.
func TestSenderOffersOnlyChangedChunks(t *testing.T) {
	const size = 1 << 20
	r := newRig(t, size, size)
	src := bytes.NewReader(nil)
	reset := func() { src.Reset(r.src) }
	reset()
	s := r.sender(t, src, nil)
	ctx := context.Background()
	if _, err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	for _, off := range []int{2*sRegion + 5, 2*sRegion + 3*4096, 9*sRegion + 4095} {
		r.src[off] ^= 0x5a
	}
	reset()
	r.log.Write(sVol, 2)
	r.log.Write(sVol, 9)
	st, err := s.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.ChunksOffered - before.ChunksOffered; got != 3 {
		t.Errorf("offered %d chunks after 3 changed blocks, want 3", got)
	}
	if got := st.BytesSent - before.BytesSent; got != 3*4096 {
		t.Errorf("sent %d bytes, want %d", got, 3*4096)
	}
	if got := st.ChunksUnchanged - before.ChunksUnchanged; got != 2*sRegion/4096-3 {
		t.Errorf("%d chunks skipped as unchanged, want %d", got, 2*sRegion/4096-3)
	}
	if !bytes.Equal(r.img.bytes(), r.src) || r.pending(t) != 0 {
		t.Fatalf("replica differs or %d regions pending", r.pending(t))
	}

	// A write that leaves the bytes as acknowledged: no batch at all.
	applies := r.tr.Count("apply")
	r.log.Write(sVol, 4)
	if _, err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if r.tr.Count("apply") != applies || r.pending(t) != 0 {
		t.Fatalf("%d batches for an unchanged region, %d pending", r.tr.Count("apply")-applies, r.pending(t))
	}

	// A failed batch: the sender forgets what the peer holds.
	r.src[5*sRegion] ^= 1
	reset()
	r.log.Write(sVol, 5)
	r.log.Write(sVol, 6)
	failed := false
	r.tr.Fault = func(op string, _ int) error {
		if op == "finish" && !failed {
			failed = true
			return syscall.ECONNRESET
		}
		return nil
	}
	before = s.Stats()
	st, err = s.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// First try: 1 chunk; after the failure: both regions whole.
	if got, want := st.ChunksOffered-before.ChunksOffered, 1+2*sRegion/4096; got != want {
		t.Errorf("offered %d chunks around a failure, want %d", got, want)
	}
	if !bytes.Equal(r.img.bytes(), r.src) || r.pending(t) != 0 {
		t.Fatalf("replica differs or %d regions pending", r.pending(t))
	}
}

// TestSenderBatchesByOfferedBytes: after scattered writes, a batch carries
// up to MaxBatchBytes of changed chunks, however much unchanged data it
// read to find them, and covers at most MaxBatchRead of the volume; a full
// sync's batches are MaxBatchBytes each, as before.
func TestSenderBatchesByOfferedBytes(t *testing.T) {
	const size = 4 << 20 // 64 regions
	for _, tc := range []struct {
		name         string
		maxRead      uint64
		deltaBatches int
	}{
		// 64 changed blocks of 4 KiB, 32 per 128 KiB batch.
		{"default read bound", 0, 2},
		// 1 MiB of the volume per batch: 4 batches, 16 blocks each.
		{"1 MiB read bound", 1 << 20, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, size, size)
			src := bytes.NewReader(r.src)
			s, err := rpc.NewSender(rpc.SenderConfig{
				Volume: sVol, Peer: sPeer, Source: src, Size: r.size, Log: r.log,
				Chunker: rpc.FixedChunker{Size: 4096}, Transport: r.tr,
				MaxBatchBytes: 2 * sRegion, MaxBatchRead: tc.maxRead, MaxAttempts: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := s.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			if got, want := r.tr.Count("apply"), size/(2*sRegion); got != want {
				t.Errorf("full sync: %d batches, want %d", got, want)
			}
			// One changed block in every region.
			for reg := uint64(0); reg < size/sRegion; reg++ {
				r.src[reg*sRegion+(reg%16)*4096] ^= 0xa5
				r.log.Write(sVol, reg)
			}
			src.Reset(r.src)
			before, st0 := r.tr.Count("apply"), s.Stats()
			st, err := s.RunOnce(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.tr.Count("apply") - before; got != tc.deltaBatches {
				t.Errorf("after 64 scattered blocks: %d batches, want %d", got, tc.deltaBatches)
			}
			if got := st.BytesSent - st0.BytesSent; got != 64*4096 {
				t.Errorf("sent %d bytes, want %d", got, 64*4096)
			}
			if !bytes.Equal(r.img.bytes(), r.src) || r.pending(t) != 0 {
				t.Fatalf("replica differs or %d regions pending", r.pending(t))
			}
		})
	}
}

// drainingTransport is a Transport whose streams, like gRPC's, may still
// read the bytes handed to Send after the stream failed or was closed: it
// keeps every run it was given on a stream that never acked, and a copy of
// it as it was.
type drainingTransport struct {
	rpc.Transport
	mu   sync.Mutex
	kept [][2][]byte // the run as given, and its bytes when given
}

func (d *drainingTransport) Apply(ctx context.Context) (rpc.ApplyStream, error) {
	st, err := d.Transport.Apply(ctx)
	if err != nil {
		return nil, err
	}
	return &drainingStream{ApplyStream: st, d: d}, nil
}

type drainingStream struct {
	rpc.ApplyStream
	d     *drainingTransport
	runs  [][2][]byte
	acked bool
}

func (s *drainingStream) Send(index uint32, data []byte) error {
	s.runs = append(s.runs, [2][]byte{data, bytes.Clone(data)})
	return s.ApplyStream.Send(index, data)
}

func (s *drainingStream) Finish(wantRoot bool) (rpc.Ack, []int, error) {
	ack, retry, err := s.ApplyStream.Finish(wantRoot)
	if err == nil && retry == nil {
		s.acked = true
	}
	return ack, retry, err
}

func (s *drainingStream) Close() {
	if !s.acked {
		s.d.mu.Lock()
		s.d.kept = append(s.d.kept, s.runs...)
		s.d.mu.Unlock()
	}
	s.ApplyStream.Close()
}

// TestSenderKeepsBytesOfFailedBatches: the read buffer behind a batch that
// failed is not read into again, since the transport may still be writing
// it out. (gRPC's writer does: a race the detector caught in CI.)
func TestSenderKeepsBytesOfFailedBatches(t *testing.T) {
	const size = 4 << 20
	r := newRig(t, size, size)
	var finishes atomic.Int64
	r.tr.Fault = func(op string, n int) error {
		if op == "finish" && n%3 == 1 {
			finishes.Add(1)
			return syscall.ECONNRESET
		}
		return nil
	}
	d := &drainingTransport{Transport: r.tr}
	s, err := rpc.NewSender(rpc.SenderConfig{
		Volume: sVol, Peer: sPeer, Source: bytes.NewReader(r.src), Size: r.size, Log: r.log,
		Chunker: rpc.FixedChunker{Size: 4096}, Transport: d, MaxBatchBytes: 4 * sRegion,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxAttempts: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.img.bytes(), r.src) {
		t.Fatal("replica differs from the source")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if finishes.Load() == 0 || len(d.kept) == 0 {
		t.Fatalf("no batch failed (%d faults, %d runs kept): the test tests nothing", finishes.Load(), len(d.kept))
	}
	for i, k := range d.kept {
		if !bytes.Equal(k[0], k[1]) {
			t.Fatalf("run %d of a failed batch (%d bytes) was overwritten after the batch failed", i, len(k[0]))
		}
	}
}
