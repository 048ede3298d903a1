package grpctransport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// closedSoon reports whether the server closed c within d (a refused
// connection is closed at once; an admitted one is left open).
func closedSoon(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestConnectionLimits: a pinned peer that opens more connections than it
// may, and idle connections that never handshake, are refused (closed at
// once, with a log line each), while another pinned peer still
// replicates; closed connections give their slots back.
func TestConnectionLimits(t *testing.T) {
	const size = 2 << 20
	s := newSenderNode(t, size, 256<<10, 16<<10, 5)
	greedy, err := identity.Init(filepath.Join(t.TempDir(), "greedy"))
	if err != nil {
		t.Fatal(err)
	}
	r := newReceiverNode(t, size, s.id.ID, greedy.ID)
	// Room for the greedy peer's one connection, two idle ones and the
	// sender's; handshakes may take long enough to outlive the test.
	r.live = Liveness{Handshake: time.Minute, Limits: Limits{MaxConns: 4, MaxConnsPerPeer: 1}}
	r.start()

	// The greedy peer's first connection is admitted and stays open.
	root := func(id *identity.Identity) error {
		c, err := Dial(r.addr, id, r.id.ID, slog.New(slog.DiscardHandler), DialOptions{MaxReconnectDelay: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = c.Root(ctx, testVol)
		return err
	}
	if err := root(greedy); err != nil {
		t.Fatalf("the greedy peer's first connection: %v", err)
	}
	// Its further ones are refused after the handshake, each of them.
	for i := range 3 {
		cfg := identity.ClientConfig(greedy, identity.AllowIDs(r.id.ID), slog.New(slog.DiscardHandler))
		cfg.NextProtos = []string{"h2"} // as gRPC's client: the server insists
		c, err := tls.Dial("tcp", r.addr, cfg)
		if err != nil {
			t.Fatalf("extra connection %d: %v", i, err)
		}
		if !closedSoon(c, 5*time.Second) {
			t.Errorf("extra connection %d of the greedy peer was not refused", i)
		}
		c.Close()
	}
	// Two connections that never handshake hold two slots...
	for range 2 {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	// ...and the other peer still replicates, in the last one.
	snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
	if _, err := snd.RunOnce(ctxT(t)); err != nil {
		t.Fatalf("the allowed peer could not replicate: %v\n%s", err, r.logBuf.String())
	}
	equalFiles(t, s.path, r.path)
	allReplicated(t, s)

	// Now the receiver is full: one more connection is refused at once,
	// long before its handshake would time out.
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	if !closedSoon(c, 5*time.Second) {
		t.Error("a connection over MaxConns was not refused")
	}
	c.Close()
	logs := r.logBuf.String()
	for _, want := range []string{"limit per peer", "connections, its limit"} {
		if !strings.Contains(logs, "refused connection") || !strings.Contains(logs, want) {
			t.Errorf("no refusal logged with %q:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs, "limit per peer"); n != 1 {
		t.Errorf("%d log lines for 3 refusals of one peer within %v, want 1 (rate limited)", n, logEvery)
	}
}

// TestConnectionSlotsFreed: a refused peer gets in once its connection
// closed.
func TestConnectionSlotsFreed(t *testing.T) {
	s := newSenderNode(t, 1<<20, 256<<10, 16<<10, 6)
	r := newReceiverNode(t, 1<<20, s.id.ID)
	r.live = Liveness{Limits: Limits{MaxConns: 1, MaxConnsPerPeer: 1}}
	r.start()
	cfg := identity.ClientConfig(s.id, identity.AllowIDs(r.id.ID), slog.New(slog.DiscardHandler))
	cfg.NextProtos = []string{"h2"}
	first, err := tls.Dial("tcp", r.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	second, err := tls.Dial("tcp", r.addr, cfg)
	if err == nil {
		if !closedSoon(second, 5*time.Second) {
			t.Fatal("a second connection over MaxConns 1 was admitted")
		}
		second.Close()
	}
	first.Close()
	// The slot comes back once the server saw the close.
	snd := s.sender(s.dial(r, DialOptions{MaxReconnectDelay: 50 * time.Millisecond}), r.id.ID)
	if _, err := snd.RunOnce(ctxT(t)); err != nil {
		t.Fatalf("replicate after the first connection closed: %v", err)
	}
	equalFiles(t, s.path, r.path)
}

func peerCtx(t *testing.T, id *identity.Identity) context.Context {
	t.Helper()
	leaf, err := x509.ParseCertificate(id.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	ti := credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: ti})
}

// TestWorkLimit: at most MaxBatches requests are served at once and
// MaxBatchesPerPeer per peer; as many may wait, and more are refused as
// Unavailable at once; a freed slot goes to a waiter; a waiter gives up
// after the wait bound.
func TestWorkLimit(t *testing.T) {
	ids := make([]*identity.Identity, 3)
	ctxs := make([]context.Context, 3)
	for i := range ids {
		var err error
		if ids[i], err = identity.Init(filepath.Join(t.TempDir(), "n")); err != nil {
			t.Fatal(err)
		}
		ctxs[i] = peerCtx(t, ids[i])
	}
	lim := newLimiter(Limits{MaxBatches: 3, MaxBatchesPerPeer: 2}, time.Hour, slog.New(slog.DiscardHandler))
	take := func(i int) func() {
		t.Helper()
		done, err := lim.acquire(ctxs[i], "Apply")
		if err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
		return done
	}
	a1, a2 := take(0), take(0)
	b1 := take(1)
	// Peer 0 holds its two, the receiver its three: peer 0 and peer 2 wait.
	got := make(chan int, 4)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	waiter := func(i int) {
		done, err := lim.acquire(ctxs[i], "Apply")
		if err != nil {
			got <- -1
			return
		}
		got <- i
		<-stop // hold the slot until the test ends
		done()
	}
	go waiter(0)
	go waiter(2)
	go waiter(2)
	waitFor(t, func() bool { lim.mu.Lock(); defer lim.mu.Unlock(); return lim.waiting == 3 })
	// The waiting room (3) is full: the next is refused at once.
	if _, err := lim.acquire(ctxs[1], "Apply"); !errors.Is(err, rpc.ErrUnavailable) {
		t.Fatalf("a request over the waiting bound: %v, want ErrUnavailable", err)
	}
	// Peer 1's slot frees: one of peer 2's waiters takes it, not peer 0
	// (which holds its two).
	b1()
	if i := <-got; i != 2 {
		t.Fatalf("slot went to peer %d, want 2", i)
	}
	a1()
	if i := <-got; i != 0 && i != 2 {
		t.Fatalf("slot went to %d", i)
	}
	a2()
	<-got
	lim.mu.Lock()
	if lim.active != 3 || lim.waiting != 0 {
		t.Errorf("active %d waiting %d, want 3 and 0", lim.active, lim.waiting)
	}
	lim.mu.Unlock()

	// A waiter gives up after the wait bound, as Unavailable.
	short := newLimiter(Limits{MaxBatches: 1, MaxBatchesPerPeer: 1}, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	done, err := short.acquire(ctxs[0], "Apply")
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if _, err := short.acquire(ctxs[1], "Apply"); !errors.Is(err, rpc.ErrUnavailable) || !strings.Contains(err.Error(), "no free slot") {
		t.Fatalf("a waiter past the bound: %v", err)
	}
	if short.waiting != 0 {
		t.Fatalf("%d still waiting", short.waiting)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// heapAfter returns the live heap after a GC.
func heapAfter() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestOfferMemory measures what the largest offers cost once decoded and
// begun, against the bound the package documents: decoded offer ≤ 2.2 M
// and batch state ≤ 0.5 M, M the largest message the server takes.
func TestOfferMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds offers of 2^18 chunks")
	}
	dir := t.TempDir()
	db, err := pebble.Open(filepath.Join(dir, "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	peerID := "sender"
	img := &nullImage{}
	const volSize = 1 << 62
	recv, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: pebble.NewReplicaStore(db.Raw()),
		Volumes: []rpc.ReceiveVolume{{Name: "v", Image: img, Size: volSize, Senders: []string{peerID}}}})
	if err != nil {
		t.Fatal(err)
	}
	m := max(recv.MaxOfferBytes(), minMsg)
	params := rpc.ChunkParams{Algorithm: "blockhash-cdc-v1", Min: 1, Avg: 4096, Max: 1 << 20}
	const n = 1 << 18
	id := func(i int) rpc.ID {
		var id rpc.ID
		id[0], id[1], id[2], id[31] = byte(i), byte(i>>8), byte(i>>16), 1
		return id
	}
	// The most chunks the receiver takes, distinct ids (nothing to copy
	// locally): in one range, and each in its own range at 64-bit offsets.
	one := rpc.Range{Start: 0, End: n * 1024}
	var own []rpc.Range
	for i := range n {
		one.Chunks = append(one.Chunks, rpc.Chunk{Offset: uint64(i) * 1024, Length: 1024, ID: id(i), Blocks: []uint64{uint64(i)}})
		off := uint64(volSize) - uint64(2*i) - 2
		own = append(own, rpc.Range{Start: off, End: off + 1, Chunks: []rpc.Chunk{{Offset: off, Length: 1, ID: id(i), Blocks: []uint64{^uint64(0)}}}})
	}
	slices.Reverse(own)
	for _, tc := range []struct {
		name   string
		ranges []rpc.Range
	}{{"one range", []rpc.Range{one}}, {"a range per chunk", own}} {
		wire, err := proto.Marshal(&pb.ApplyRequest{Msg: &pb.ApplyRequest_Offer{Offer: offerToPB(&rpc.Offer{Volume: "v", VolumeSize: volSize, Params: params, Batch: 1, Ranges: tc.ranges})}})
		if err != nil {
			t.Fatal(err)
		}
		if len(wire) > m {
			t.Fatalf("%s: offer of %d bytes over the message bound %d", tc.name, len(wire), m)
		}
		base := heapAfter()
		var req pb.ApplyRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			t.Fatal(err)
		}
		offer, err := offerFromPB(req.GetOffer())
		if err != nil {
			t.Fatal(err)
		}
		decoded := heapAfter() - base
		b, need, err := recv.Begin(context.Background(), peerID, offer)
		if err != nil {
			t.Fatal(err)
		}
		begun := heapAfter() - base - decoded
		runtime.KeepAlive(&req)
		runtime.KeepAlive(need)
		b.Abort()
		t.Logf("%s: message bound M %d bytes, this offer %d; decoded offer %d bytes (%.2f M); batch state %d bytes (%.2f M)",
			tc.name, m, len(wire), decoded, float64(decoded)/float64(m), begun, float64(begun)/float64(m))
		if float64(decoded) > offerPerM*float64(m) {
			t.Errorf("%s: a decoded offer holds %d bytes, over the documented %.1f M = %d", tc.name, decoded, offerPerM, int(offerPerM*float64(m)))
		}
		if float64(begun) > batchPerM*float64(m) {
			t.Errorf("%s: a begun batch holds %d bytes, over the documented %.1f M = %d", tc.name, begun, batchPerM, int(batchPerM*float64(m)))
		}
	}
}

// The documented costs of a decoded offer and a begun batch, per byte of
// the message bound (limits.go).
const offerPerM, batchPerM = 3.0, 1.0 // measured: 2.83 and 0.93

// nullImage is an image that holds zeros and drops writes.
type nullImage struct{}

func (nullImage) ReadAt(p []byte, off int64) (int, error)  { clear(p); return len(p), nil }
func (nullImage) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
func (nullImage) Sync() error                              { return nil }
