package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// Liveness bounds how long a dead path or a stuck peer can hold a
// connection or a batch, on either side. A network blackout drops packets
// without a reset, so TCP alone would keep a connection "up" for many
// minutes: every connection is pinged, and every batch stream must make
// progress.
type Liveness struct {
	// Ping is how long a connection may be idle before it is pinged, and
	// PingTimeout how long the ping may go unanswered before the
	// connection is closed (both sides).
	Ping, PingTimeout time.Duration
	// Stall is how long a batch stream may go without a message in either
	// direction before it is aborted (the sender's Send, Recv and the
	// receiver's Recv).
	Stall time.Duration
	// Handshake bounds a new connection's TLS handshake (receiver).
	Handshake time.Duration
	// MaxStreams bounds the concurrent streams one connection may open
	// (receiver).
	MaxStreams uint32
	// Limits bound the receiver's connections and concurrent work
	// (limits.go).
	Limits Limits
}

// DefaultLiveness: a blackholed path is noticed within Ping+PingTimeout
// (20 s), a stuck batch within a minute.
var DefaultLiveness = Liveness{
	Ping: 10 * time.Second, PingTimeout: 10 * time.Second, Stall: time.Minute,
	Handshake: 10 * time.Second, MaxStreams: 16,
}

func (l Liveness) withDefaults() Liveness {
	d := DefaultLiveness
	if l.Ping == 0 {
		l.Ping = d.Ping
	}
	if l.PingTimeout == 0 {
		l.PingTimeout = d.PingTimeout
	}
	if l.Stall == 0 {
		l.Stall = d.Stall
	}
	if l.Handshake == 0 {
		l.Handshake = d.Handshake
	}
	if l.MaxStreams == 0 {
		l.MaxStreams = d.MaxStreams
	}
	l.Limits = l.Limits.withDefaults()
	return l
}

func (l Liveness) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time: l.Ping, Timeout: l.PingTimeout, PermitWithoutStream: true,
	})}
}

func (l Liveness) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: l.Ping, Timeout: l.PingTimeout}),
		// Senders ping every l.Ping: allow it (gRPC's default policy
		// closes a connection pinged more often than every 5 minutes).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.Ping / 2, PermitWithoutStream: true}),
		grpc.ConnectionTimeout(l.Handshake),
		grpc.MaxConcurrentStreams(l.MaxStreams),
	}
}

// errStalled is the cause of a batch stream aborted for making no
// progress; it wraps rpc.ErrUnavailable so that the sender retries.
var errStalled = fmt.Errorf("%w: batch stream made no progress", rpc.ErrUnavailable)

// stallTimer cancels a stream's context once no progress was reported for
// the stall duration.
type stallTimer struct {
	d     time.Duration
	t     *time.Timer
	mu    sync.Mutex
	fired bool
}

func newStallTimer(d time.Duration, cancel context.CancelCauseFunc) *stallTimer {
	s := &stallTimer{d: d}
	s.t = time.AfterFunc(d, func() {
		s.mu.Lock()
		s.fired = true
		s.mu.Unlock()
		cancel(fmt.Errorf("%w for %v (the peer or the path is stuck)", errStalled, d))
	})
	return s
}

// progress restarts the stall clock.
func (s *stallTimer) progress() { s.t.Reset(s.d) }

func (s *stallTimer) stop() { s.t.Stop() }

// stalled reports whether the timer fired.
func (s *stallTimer) stalled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fired
}

// recvResult is one message (or the final error) read from a stream.
type recvResult struct {
	req *inbound
	err error
}

// stallReader reads a receiver-side batch stream in its own goroutine, so
// that the handler can give up on a sender that goes silent while holding
// the batch's ranges. The goroutine touches only the stream; it ends when
// the stream does (gRPC cancels it once the handler returns).
type stallReader struct {
	ch    chan recvResult
	done  chan struct{}
	stall time.Duration
}

func newStallReader(stream pb.Replica_ApplyServer, stall time.Duration) *stallReader {
	r := &stallReader{ch: make(chan recvResult), done: make(chan struct{}), stall: stall}
	go func() {
		for {
			in := &inbound{}
			err := stream.RecvMsg(in)
			select {
			case r.ch <- recvResult{in, err}:
			case <-r.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// next returns the stream's next message, or errStalled if none came
// within the stall duration.
func (r *stallReader) next() (*inbound, error) {
	t := time.NewTimer(r.stall)
	defer t.Stop()
	select {
	case m := <-r.ch:
		return m.req, m.err
	case <-t.C:
		return nil, fmt.Errorf("%w: no message from the sender for %v", errStalled, r.stall)
	}
}

// close releases the reading goroutine.
func (r *stallReader) close() { close(r.done) }

// stallCause turns the error of a stream whose context the stall timer
// cancelled into errStalled.
func stallCause(ctx context.Context, t *stallTimer, err error) error {
	if err != nil && t.stalled() {
		if c := context.Cause(ctx); c != nil && errors.Is(c, errStalled) {
			return c
		}
	}
	return err
}
