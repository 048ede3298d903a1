package grpctransport

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

const testVol = "vol-0001"

// receiverNode is the peer that holds the replica; it can be restarted on
// the same address.
type receiverNode struct {
	t       testing.TB
	id      *identity.Identity
	dir     string
	path    string
	size    uint64
	senders []string
	addr    string
	log     *slog.Logger
	logBuf  *syncBuffer
	// wrap, if set, wraps the replica file (fault injection).
	wrap func(rpc.Image) rpc.Image
	// live, if set, replaces DefaultLiveness.
	live Liveness

	mu   sync.Mutex
	db   *pebbledb.DB
	recv *rpc.Receiver
	srv  *grpc.Server
	file *os.File
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newReceiverNode(t testing.TB, size uint64, senders ...string) *receiverNode {
	t.Helper()
	id, err := identity.Init(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	n := &receiverNode{t: t, id: id, dir: dir, path: filepath.Join(dir, "replica.img"), size: size, senders: senders, logBuf: &syncBuffer{}}
	n.log = slog.New(slog.NewTextHandler(n.logBuf, nil))
	f, err := os.Create(n.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(n.stop)
	return n
}

func (n *receiverNode) start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	db, err := pebbledb.Open(filepath.Join(n.dir, "db"), &pebbledb.Options{Logger: quietPebble{}})
	if err != nil {
		n.t.Fatal(err)
	}
	f, err := os.OpenFile(n.path, os.O_RDWR, 0)
	if err != nil {
		n.t.Fatal(err)
	}
	var img rpc.Image = f
	if n.wrap != nil {
		img = n.wrap(f)
	}
	recv, err := rpc.NewReceiver(rpc.ReceiverConfig{
		Store: pebble.NewReplicaStore(db), Log: n.log,
		Volumes: []rpc.ReceiveVolume{{Name: testVol, Image: img, Size: n.size, Senders: n.senders}},
	})
	if err != nil {
		n.t.Fatal(err)
	}
	addr := n.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	for i := 0; ; i++ {
		ln, err = net.Listen("tcp", addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		n.t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	n.db, n.recv, n.file = db, recv, f
	n.srv = NewServer(n.id, recv, n.log, n.live)
	n.done = make(chan struct{})
	go func(srv *grpc.Server, done chan struct{}) {
		srv.Serve(ln)
		close(done)
	}(n.srv, n.done)
}

// stop kills the server abruptly (connections cut mid-stream), then closes
// the store and the image, as a crash would leave them (minus unsynced data,
// which the page cache keeps here).
func (n *receiverNode) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Stop()
	<-n.done
	n.db.Close()
	n.file.Close()
	n.srv, n.db, n.recv, n.file = nil, nil, nil, nil
}

func (n *receiverNode) root() rpc.RootInfo {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	info, err := n.recv.Root(n.senders[0], testVol)
	if err != nil {
		n.t.Fatal(err)
	}
	return info
}

// senderNode owns the source volume.
type senderNode struct {
	t          testing.TB
	id         *identity.Identity
	path       string
	src        *os.File
	size       uint64
	regionSize uint64
	log        *rpctest.FakeLog
	chunker    rpc.Chunker
	rng        *rand.Rand
	// source, if set, replaces src as what the sender reads.
	source io.ReaderAt
	// maxAttempts bounds retries (default 200).
	maxAttempts int
	// batchBytes bounds a batch (default 1 MiB, for many batches in tests).
	batchBytes uint64
}

func newSenderNode(t testing.TB, size, regionSize uint64, chunk uint32, seed uint64) *senderNode {
	t.Helper()
	id, err := identity.Init(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	s := &senderNode{t: t, id: id, path: filepath.Join(t.TempDir(), "source.img"), size: size, regionSize: regionSize,
		log: rpctest.NewFakeLog(), chunker: rpc.FixedChunker{Size: chunk}, rng: rand.New(rand.NewPCG(seed, 1))}
	data := make([]byte, size)
	for i := 0; i+8 <= len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], s.rng.Uint64())
	}
	// Some duplicate and zero content, so local copies and dedup get used.
	copy(data[size/2:size/2+uint64(chunk)*4], make([]byte, chunk*4))
	if err := os.WriteFile(s.path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if s.src, err = os.OpenFile(s.path, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.src.Close() })
	s.log.AddVolume(testVol, regionSize, (size+regionSize-1)/regionSize)
	return s
}

// randomWrites writes n random blocks of up to 8 KiB and marks their
// regions as a completed kernel write would.
func (s *senderNode) randomWrites(n int) {
	for range n {
		l := 1 + s.rng.Uint64N(8192)
		off := s.rng.Uint64N(s.size - l)
		b := make([]byte, l)
		for i := range b {
			b[i] = byte(s.rng.Uint32())
		}
		if _, err := s.src.WriteAt(b, int64(off)); err != nil {
			s.t.Fatal(err)
		}
		for r := off / s.regionSize; r <= (off+l-1)/s.regionSize; r++ {
			s.log.Write(testVol, r)
		}
	}
}

func (s *senderNode) sender(tr rpc.Transport, peer string) *rpc.Sender {
	s.t.Helper()
	var src io.ReaderAt = s.src
	if s.source != nil {
		src = s.source
	}
	if s.batchBytes == 0 {
		s.batchBytes = 1 << 20
	}
	if s.maxAttempts == 0 {
		s.maxAttempts = 200
	}
	snd, err := rpc.NewSender(rpc.SenderConfig{
		Volume: testVol, Peer: peer, Source: src, Size: s.size, Log: s.log, Chunker: s.chunker, Transport: tr,
		MaxBatchBytes: s.batchBytes, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: s.maxAttempts,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return snd
}

func (s *senderNode) dial(r *receiverNode, opts DialOptions) *Client {
	s.t.Helper()
	c, err := Dial(r.addr, s.id, r.id.ID, slog.New(slog.DiscardHandler), opts)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// checkReplicatedEarly fails the test if a region is marked replicated while
// the replica's bytes for it differ from the source's.
func checkReplicatedEarly(t testing.TB, s *senderNode, r *receiverNode) *atomic.Int64 {
	var calls atomic.Int64
	s.log.OnReplicated = func(uuid string, region, gen uint64) error {
		calls.Add(1)
		off := region * s.regionSize
		l := min(s.regionSize, s.size-off)
		a, b := make([]byte, l), make([]byte, l)
		if _, err := s.src.ReadAt(a, int64(off)); err != nil {
			t.Errorf("read source: %v", err)
		}
		f, err := os.Open(r.path)
		if err != nil {
			t.Errorf("open replica: %v", err)
			return nil
		}
		defer f.Close()
		if _, err := f.ReadAt(b, int64(off)); err != nil {
			t.Errorf("read replica: %v", err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("region %d (gen %d) marked replicated but the replica differs", region, gen)
		}
		return nil
	}
	return &calls
}

func equalFiles(t testing.TB, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("replica differs from source first at byte %d", i)
			}
		}
		t.Fatalf("replica differs from source (sizes %d, %d)", len(x), len(y))
	}
}

func allReplicated(t testing.TB, s *senderNode) {
	t.Helper()
	p, err := s.log.Pending(testVol)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 0 {
		t.Fatalf("%d regions still pending, first %d", len(p), p[0].Region)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// quietPebble drops pebble's informational logging in tests.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)      {}
func (quietPebble) Errorf(f string, a ...any) { fmt.Fprintf(os.Stderr, "pebble: "+f+"\n", a...) }
func (quietPebble) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
