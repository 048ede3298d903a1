package rpctest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/rpc"
)

// Transport is an in-memory rpc.Transport straight into an rpc.Receiver,
// as peer Peer: no network, no goroutines, so sender tests are
// deterministic. It keeps the wire's semantics: each Send is one message,
// Finish answers a failed patch with the chunks to send whole, and a
// stream that ends without Finish aborts its batch.
type Transport struct {
	Recv *rpc.Receiver
	Peer string
	// Fault, if set, is called before every operation ("apply", "offer",
	// "send", "finish", "root", "scrub") with its count so far (from 1); a non-nil
	// error fails the operation as a dropped connection would (the batch
	// is aborted).
	Fault func(op string, n int) error

	mu     sync.Mutex
	counts map[string]int
	// Bytes counts the chunk payload bytes that crossed.
	Bytes uint64
}

func (t *Transport) fault(op string) error {
	t.mu.Lock()
	if t.counts == nil {
		t.counts = map[string]int{}
	}
	t.counts[op]++
	n := t.counts[op]
	t.mu.Unlock()
	if t.Fault == nil {
		return nil
	}
	if err := t.Fault(op, n); err != nil {
		return fmt.Errorf("%s %d: %w: %w", op, n, rpc.ErrUnavailable, err)
	}
	return nil
}

// Count returns how many times op was attempted.
func (t *Transport) Count(op string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counts[op]
}

// Apply implements rpc.Transport.
func (t *Transport) Apply(ctx context.Context) (rpc.ApplyStream, error) {
	if err := t.fault("apply"); err != nil {
		return nil, err
	}
	return &stream{t: t, ctx: ctx}, nil
}

// Root implements rpc.Transport.
func (t *Transport) Root(_ context.Context, volume string) (rpc.RootInfo, error) {
	if err := t.fault("root"); err != nil {
		return rpc.RootInfo{}, err
	}
	return t.Recv.Root(t.Peer, volume)
}

// Commit implements rpc.Transport.
func (t *Transport) Commit(ctx context.Context, c rpc.Commit) (rpc.Committed, error) {
	if err := t.fault("commit"); err != nil {
		return rpc.Committed{}, err
	}
	return t.Recv.CommitPoint(ctx, t.Peer, c)
}

// Tree implements rpc.Transport.
func (t *Transport) Tree(_ context.Context, volume string) blockhash.NodeSource {
	tree, err := t.Recv.Tree(t.Peer, volume)
	if err != nil {
		return errSource{err}
	}
	return tree
}

type errSource struct{ err error }

func (e errSource) TreeHeight() (int, error) { return 0, e.err }
func (e errSource) TreeNodes(int, []blockhash.Range) ([]blockhash.Node, error) {
	return nil, e.err
}

type stream struct {
	t     *Transport
	ctx   context.Context
	b     *rpc.Batch
	offer *rpc.Offer
	done  bool
}

// Offer implements rpc.ApplyStream; the offer is copied as a wire would.
func (s *stream) Offer(o *rpc.Offer) (rpc.Need, error) {
	if err := s.t.fault("offer"); err != nil {
		return rpc.Need{}, err
	}
	if s.b != nil {
		return rpc.Need{}, fmt.Errorf("second offer on one stream: %w", rpc.ErrProtocol)
	}
	c := *o
	c.Ranges = slices.Clone(o.Ranges)
	for i := range c.Ranges {
		c.Ranges[i].Chunks = slices.Clone(c.Ranges[i].Chunks)
	}
	b, need, err := s.t.Recv.Begin(s.ctx, s.t.Peer, &c)
	if err != nil {
		return rpc.Need{}, err
	}
	s.b, s.offer = b, &c
	return need, nil
}

func (s *stream) put(partial bool, index uint32, data []byte) error {
	if err := s.t.fault("send"); err != nil {
		s.Close()
		return err
	}
	if s.b == nil || s.done {
		return fmt.Errorf("data without an open batch: %w", rpc.ErrProtocol)
	}
	s.t.mu.Lock()
	s.t.Bytes += uint64(len(data))
	s.t.mu.Unlock()
	put := s.b.Put
	if partial {
		put = s.b.PutBlocks
	}
	if err := put(index, slices.Clone(data)); err != nil {
		s.Close()
		return err
	}
	return nil
}

// Send implements rpc.ApplyStream.
func (s *stream) Send(index uint32, data []byte) error { return s.put(false, index, data) }

// SendBlocks implements rpc.ApplyStream.
func (s *stream) SendBlocks(index uint32, data []byte) error { return s.put(true, index, data) }

// Finish implements rpc.ApplyStream.
func (s *stream) Finish(wantRoot bool) (rpc.Ack, []int, error) {
	if err := s.t.fault("finish"); err != nil {
		s.Close()
		return rpc.Ack{}, nil, err
	}
	if s.b == nil || s.done {
		return rpc.Ack{}, nil, fmt.Errorf("finish without an open batch: %w", rpc.ErrProtocol)
	}
	if retry := s.b.Retry(); len(retry) > 0 {
		return rpc.Ack{}, retry, nil
	}
	s.done = true
	ack, err := s.b.Commit(wantRoot)
	if err != nil {
		return rpc.Ack{}, nil, err
	}
	return ack, nil, nil
}

// Close implements rpc.ApplyStream: an unfinished batch is aborted.
func (s *stream) Close() {
	if s.b != nil && !s.done {
		s.done = true
		s.b.Abort()
	}
}

var _ rpc.Transport = (*Transport)(nil)
