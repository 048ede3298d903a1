package grpctransport

// # What a peer can hold on a receiver
//
// A receiver admits only pinned peers (the TLS handshake), but a pinned
// peer may be buggy or compromised. Everything it can make the receiver
// hold is bounded:
//
//   - Connections: at most Limits.MaxConns at once from everyone, counted
//     from accept (before the TLS handshake) to close, and at most
//     Limits.MaxConnsPerPeer established ones per peer id. A connection
//     over either bound is closed at once and logged ("refused
//     connection"). A handshake takes at most Liveness.Handshake.
//   - Streams: at most Liveness.MaxStreams per connection (HTTP/2).
//   - Work: at most Limits.MaxBatches batch streams (Apply) and Root /
//     TreeNodes requests are served at once, at most
//     Limits.MaxBatchesPerPeer of them for one peer. As many again may wait
//     for a slot (for half of Liveness.Stall, then they are refused as
//     Unavailable and the sender retries); beyond that a request is refused
//     at once. A waiting request's bytes are not read, so only what gRPC
//     buffers for it costs memory. Other methods are not counted.
//   - Messages: none larger than M = max(Receiver.MaxOfferBytes, 1 MiB),
//     checked by gRPC before decoding.
//
// # The receiver's memory bound
//
// What one served batch stream can hold at once, worst case, in units of
// M (TestOfferMemory measures the offer and batch terms on the largest
// offers the receiver takes: 2.83 M and 0.93 M for 2^18 chunks, each in
// its own range):
//
//	offer wire bytes, while decoded    1 M
//	decoded offer (gRPC message and
//	rpc.Offer, kept for the batch)     3 M
//	batch state (Begin: chunk list,
//	per-chunk flags, the need)         1 M
//	next message read ahead (a data
//	run of up to M bytes, wire and
//	decoded, while one is applied)     2 M
//	gRPC's unread buffer (the stream's
//	flow-control window; its BDP
//	estimator caps it at 16 MiB)       W = 16 MiB
//
// so a served stream holds at most S = 7 M + W, and a waiting one at most
// W. A Root or TreeNodes request rebuilds the replica's chunk list and
// Merkle tree, T ≈ 440 bytes per chunk of the volume (issue 12 measured
// 437 MiB for 4 GiB in 4 KiB chunks; until the tree is kept
// incrementally). An idle connection costs C ≈ 200 KiB (an estimate: TLS
// and HTTP/2 read and write buffers, three goroutines); a stream refused
// at once only what was in flight. In all:
//
//	memory ≤ MaxBatches × (max(S, T) + W) + MaxConns × C
//
// With the defaults (rpc.Receiver's MaxChunks 1<<18 and MaxBatchBytes
// 256 MiB make M = 27 791 360 bytes ≈ 26.5 MiB; MaxBatches 8, MaxConns
// 32): S ≈ 7 × 26.5 + 16 ≈ 202 MiB, and
//
//	8 × (202 + 16) MiB + 32 × 0.2 MiB ≈ 1.7 GiB
//
// whatever the peers send (one peer alone: MaxBatchesPerPeer 4, about
// 0.85 GiB), on top of the receiver's own base (Pebble's caches and
// memtables). T exceeds S for volumes of more than about 480 000 chunks
// (1.8 GiB in 4 KiB chunks); a 4 GiB volume in 4 KiB chunks makes
// T ≈ 440 MiB, and the bound 8 × 456 MiB ≈ 3.6 GiB. Real batches are far
// smaller: dmsync's sender offers at most its batch (a few thousand
// chunks) and sends 256 KiB runs.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// Limits bound the connections and the work peers can hold on a receiver
// (see the memory bound above). Zero fields take DefaultLimits's.
type Limits struct {
	// MaxConns bounds the receiver's connections from everyone, from
	// accept to close (handshaking ones too).
	MaxConns int
	// MaxConnsPerPeer bounds one peer id's established connections. A
	// sender uses one per volume it sends, and one per verify.
	MaxConnsPerPeer int
	// MaxBatches bounds the batch streams and Root/TreeNodes requests
	// served at once; as many more may wait for a slot.
	MaxBatches int
	// MaxBatchesPerPeer bounds those of one peer (and its waiting ones).
	MaxBatchesPerPeer int
}

// DefaultLimits suit a receiver of a few peers with a few volumes each.
var DefaultLimits = Limits{MaxConns: 32, MaxConnsPerPeer: 8, MaxBatches: 8, MaxBatchesPerPeer: 4}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxConns <= 0 {
		l.MaxConns = d.MaxConns
	}
	if l.MaxConnsPerPeer <= 0 {
		l.MaxConnsPerPeer = d.MaxConnsPerPeer
	}
	if l.MaxBatches <= 0 {
		l.MaxBatches = d.MaxBatches
	}
	if l.MaxBatchesPerPeer <= 0 {
		l.MaxBatchesPerPeer = d.MaxBatchesPerPeer
	}
	return l
}

// errBusy is the cause of a request refused by the work bound; it wraps
// rpc.ErrUnavailable so that the sender retries.
var errBusy = fmt.Errorf("%w: receiver busy", rpc.ErrUnavailable)

// limiter enforces Limits on one server.
type limiter struct {
	l     Limits
	wait  time.Duration // how long a request may wait for a slot
	log   *slog.Logger
	mu    sync.Mutex
	conns int            // accepted, not yet closed
	peers map[string]int // established connections by peer id
	// Work slots: served and waiting requests, all and per peer.
	active, waiting         int
	peerActive, peerWaiting map[string]int
	freed                   chan struct{} // closed and replaced when a slot frees
	// Refusals are logged once per reason and peer every logEvery.
	logged map[string]time.Time
	quiet  map[string]int // refusals not logged since
}

const logEvery = 10 * time.Second

func newLimiter(l Limits, wait time.Duration, log *slog.Logger) *limiter {
	return &limiter{
		l: l.withDefaults(), wait: wait, log: log, peers: map[string]int{},
		peerActive: map[string]int{}, peerWaiting: map[string]int{}, freed: make(chan struct{}),
		logged: map[string]time.Time{}, quiet: map[string]int{},
	}
}

// refused logs a refusal, at most once per reason and peer every logEvery
// (a peer that retries in a loop must not flood the journal).
func (lim *limiter) refused(what, peer, remote, why string) {
	key := what + "\x00" + peer
	now := time.Now()
	lim.mu.Lock()
	if t, ok := lim.logged[key]; ok && now.Sub(t) < logEvery {
		lim.quiet[key]++
		lim.mu.Unlock()
		return
	}
	n := lim.quiet[key]
	lim.logged[key], lim.quiet[key] = now, 0
	lim.mu.Unlock()
	attrs := []any{"peer", peer, "remote", remote, "reason", why}
	if n > 0 {
		attrs = append(attrs, "more_refused_since_last_log", n)
	}
	lim.log.Warn("refused "+what, attrs...)
}

func (lim *limiter) options() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(lim.unary), grpc.ChainStreamInterceptor(lim.stream)}
}

// creds wraps the server's TLS credentials with the connection bounds.
func (lim *limiter) creds(c credentials.TransportCredentials) credentials.TransportCredentials {
	return &limitedCreds{TransportCredentials: c, lim: lim}
}

type limitedCreds struct {
	credentials.TransportCredentials
	lim *limiter
}

func (c *limitedCreds) Clone() credentials.TransportCredentials {
	return &limitedCreds{TransportCredentials: c.TransportCredentials.Clone(), lim: c.lim}
}

// ServerHandshake counts the connection from accept, refuses it before the
// TLS handshake when the receiver holds MaxConns, and after it when its
// peer holds MaxConnsPerPeer.
func (c *limitedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	lim := c.lim
	remote := raw.RemoteAddr().String()
	lim.mu.Lock()
	if lim.conns >= lim.l.MaxConns {
		lim.mu.Unlock()
		why := fmt.Sprintf("the receiver holds %d connections, its limit", lim.l.MaxConns)
		lim.refused("connection", "", remote, why)
		return nil, nil, fmt.Errorf("refused connection from %s: %s", remote, why)
	}
	lim.conns++
	lim.mu.Unlock()
	conn, ai, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		lim.release("")
		return nil, nil, err
	}
	ti, ok := ai.(credentials.TLSInfo)
	var id string
	if ok {
		id, err = identity.PeerID(ti.State)
	}
	if !ok || err != nil {
		conn.Close()
		lim.release("")
		return nil, nil, fmt.Errorf("connection from %s: no peer id: %w", remote, errors.Join(err, rpc.ErrPermission))
	}
	lim.mu.Lock()
	if lim.peers[id] >= lim.l.MaxConnsPerPeer {
		lim.mu.Unlock()
		conn.Close()
		lim.release("")
		why := fmt.Sprintf("the peer holds %d connections, the limit per peer", lim.l.MaxConnsPerPeer)
		lim.refused("connection", id, remote, why)
		return nil, nil, fmt.Errorf("refused connection from %s (%s): %s", remote, id, why)
	}
	lim.peers[id]++
	lim.mu.Unlock()
	return &countedConn{Conn: conn, lim: lim, peer: id}, ai, nil
}

// release gives back a connection slot (and its peer's, if peer != "").
func (lim *limiter) release(peer string) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	lim.conns--
	if peer != "" {
		if lim.peers[peer]--; lim.peers[peer] <= 0 {
			delete(lim.peers, peer)
		}
	}
}

// countedConn gives its slots back when it is closed (once).
type countedConn struct {
	net.Conn
	lim  *limiter
	peer string
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.release(c.peer) })
	return err
}

// bounded lists the methods the work bound covers: each holds memory in
// proportion to an offer or a volume. Others pass unbounded.
func bounded(method string) bool {
	switch method {
	case pb.Replica_Apply_FullMethodName, pb.Replica_Root_FullMethodName, pb.Replica_TreeNodes_FullMethodName,
		pb.Replica_Commit_FullMethodName, pb.Replica_Scrub_FullMethodName:
		return true
	}
	return false
}

func (lim *limiter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !bounded(info.FullMethod) {
		return h(ctx, req)
	}
	done, err := lim.acquire(ctx, info.FullMethod)
	if err != nil {
		return nil, toStatus(err)
	}
	defer done()
	return h(ctx, req)
}

func (lim *limiter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !bounded(info.FullMethod) {
		return h(srv, ss)
	}
	done, err := lim.acquire(ss.Context(), info.FullMethod)
	if err != nil {
		return toStatus(err)
	}
	defer done()
	return h(srv, ss)
}

// acquire takes a work slot for the request's peer, waiting up to lim.wait
// while MaxBatches (or the peer's MaxBatchesPerPeer) are served, if no
// more than as many wait already; it returns the slot's release.
func (lim *limiter) acquire(ctx context.Context, method string) (func(), error) {
	id, err := peerID(ctx)
	if err != nil {
		return nil, err
	}
	var timer <-chan time.Time
	queued := false
	lim.mu.Lock()
	for {
		if lim.active < lim.l.MaxBatches && lim.peerActive[id] < lim.l.MaxBatchesPerPeer {
			lim.active++
			lim.peerActive[id]++
			if queued {
				lim.unqueueLocked(id)
			}
			lim.mu.Unlock()
			var once sync.Once
			return func() { once.Do(func() { lim.done(id) }) }, nil
		}
		if !queued {
			if lim.waiting >= lim.l.MaxBatches || lim.peerWaiting[id] >= lim.l.MaxBatchesPerPeer {
				why := fmt.Sprintf("%d requests served (%d of them the peer's) and %d waiting: the limits are %d served and %d waiting, %d each per peer",
					lim.active, lim.peerActive[id], lim.waiting, lim.l.MaxBatches, lim.l.MaxBatches, lim.l.MaxBatchesPerPeer)
				lim.mu.Unlock()
				lim.refused("request", id, method, why)
				return nil, fmt.Errorf("%w: %s; try again later", errBusy, why)
			}
			queued = true
			lim.waiting++
			lim.peerWaiting[id]++
			t := time.NewTimer(lim.wait)
			defer t.Stop()
			timer = t.C
		}
		freed := lim.freed
		lim.mu.Unlock()
		select {
		case <-freed:
		case <-timer:
			lim.mu.Lock()
			lim.unqueueLocked(id)
			lim.mu.Unlock()
			why := fmt.Sprintf("no free slot for %v (%d served at once, %d per peer)", lim.wait, lim.l.MaxBatches, lim.l.MaxBatchesPerPeer)
			lim.refused("request", id, method, why)
			return nil, fmt.Errorf("%w: %s; try again later", errBusy, why)
		case <-ctx.Done():
			lim.mu.Lock()
			lim.unqueueLocked(id)
			lim.mu.Unlock()
			return nil, ctx.Err()
		}
		lim.mu.Lock()
	}
}

func (lim *limiter) unqueueLocked(id string) {
	lim.waiting--
	if lim.peerWaiting[id]--; lim.peerWaiting[id] <= 0 {
		delete(lim.peerWaiting, id)
	}
}

// done releases a work slot and wakes the waiting requests.
func (lim *limiter) done(id string) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	lim.active--
	if lim.peerActive[id]--; lim.peerActive[id] <= 0 {
		delete(lim.peerActive, id)
	}
	close(lim.freed)
	lim.freed = make(chan struct{})
}
