package replicate

import (
	"context"
	"errors"
	"sync"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/rpc"
)

// A peer knows a sent volume by one name, its wire name. With `dmsync
// replicate VOLUME --as NAME` it is NAME. Otherwise the receiver may have
// been told either the volume's log uuid (what A's dirty log calls it) or
// the name the sender's operator uses (`dmsync receive data` on B for
// `dmsync replicate data` on A): the sender offers the log uuid first and,
// when the peer answers that it has no such volume, the name, and keeps
// to the one the peer accepted.

// wireNames remembers, per send, the name the peer accepted.
type wireNames struct {
	mu    sync.Mutex
	names map[Send]string
}

func (w *wireNames) get(s Send) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, ok := w.names[s]
	return n, ok
}

func (w *wireNames) set(s Send, name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.names == nil {
		w.names = map[Send]string{}
	}
	w.names[s] = name
}

func (w *wireNames) forget(s Send) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.names, s)
}

// candidates lists the names to offer s under, the one to try first first.
func (w *wireNames) candidates(s Send, src Source) []string {
	if s.As != "" {
		return []string{s.As}
	}
	c := []string{src.LogUUID}
	if s.Volume != src.LogUUID {
		c = append(c, s.Volume)
	}
	if n, ok := w.get(s); ok && len(c) == 2 && n == c[1] {
		c[0], c[1] = c[1], c[0]
	}
	return c
}

// wireTransport offers a volume to the peer under its wire name: the
// sender and the dirty log keep calling it by its log uuid.
type wireTransport struct {
	rpc.Transport
	names *wireNames
	send  Send
	cands []string
}

func (m *Manager) peerTransport(t rpc.Transport, s Send, src Source) *wireTransport {
	return &wireTransport{Transport: t, names: &m.wire, send: s, cands: m.wire.candidates(s, src)}
}

// name is the name to use now.
func (t *wireTransport) name() string { return t.cands[0] }

// unknown notes that the peer has no volume by the current name: the next
// attempt uses the other candidate.
func (t *wireTransport) unknown(err error) {
	if !errors.Is(err, rpc.ErrUnknownVolume) || len(t.cands) < 2 {
		return
	}
	t.cands[0], t.cands[1] = t.cands[1], t.cands[0]
	t.names.set(t.send, t.cands[0])
}

// Apply implements rpc.Transport.
func (t *wireTransport) Apply(ctx context.Context) (rpc.ApplyStream, error) {
	s, err := t.Transport.Apply(ctx)
	if err != nil {
		return nil, err
	}
	return &wireStream{ApplyStream: s, t: t}, nil
}

// Root implements rpc.Transport, trying the other name once.
func (t *wireTransport) Root(ctx context.Context, _ string) (rpc.RootInfo, error) {
	r, err := t.Transport.Root(ctx, t.name())
	if errors.Is(err, rpc.ErrUnknownVolume) && len(t.cands) > 1 {
		t.unknown(err)
		r, err = t.Transport.Root(ctx, t.name())
	}
	if err == nil {
		t.names.set(t.send, t.name())
	}
	return r, err
}

// Commit implements rpc.Transport, under the name the batches used,
// trying the other name once: a sender that starts afresh (a restarted
// replicator knows no wire name yet) may commit a point of no batches
// before it has offered anything, and under the first candidate forever.
// The receiver holds no point under a name it does not know, so the
// other name commits only what was staged under it.
func (t *wireTransport) Commit(ctx context.Context, c rpc.Commit) (rpc.Committed, error) {
	c.Volume = t.name()
	r, err := t.Transport.Commit(ctx, c)
	if errors.Is(err, rpc.ErrUnknownVolume) && len(t.cands) > 1 {
		t.unknown(err)
		c.Volume = t.name()
		r, err = t.Transport.Commit(ctx, c)
	}
	if err == nil {
		t.names.set(t.send, t.name())
	}
	return r, err
}

// Tree implements rpc.Transport.
func (t *wireTransport) Tree(ctx context.Context, _ string) blockhash.NodeSource {
	return t.Transport.Tree(ctx, t.name())
}

// Scrub implements rpc.Transport, trying the other name once.
func (t *wireTransport) Scrub(ctx context.Context, req rpc.ScrubRequest, each func(rpc.ScrubDigests) error) error {
	req.Volume = t.name()
	err := t.Transport.Scrub(ctx, req, each)
	if errors.Is(err, rpc.ErrUnknownVolume) && len(t.cands) > 1 {
		t.unknown(err)
		req.Volume = t.name()
		err = t.Transport.Scrub(ctx, req, each)
	}
	if err == nil {
		t.names.set(t.send, t.name())
	}
	return err
}

type wireStream struct {
	rpc.ApplyStream
	t *wireTransport
}

// Offer implements rpc.ApplyStream.
func (s *wireStream) Offer(o *rpc.Offer) (rpc.Need, error) {
	own := o.Volume
	o.Volume = s.t.name()
	need, err := s.ApplyStream.Offer(o)
	o.Volume = own
	if err != nil {
		s.t.unknown(err)
	} else {
		s.t.names.set(s.t.send, s.t.name())
	}
	return need, err
}

// wireName is the name the peer knows s by, as far as this node knows.
func (m *Manager) wireName(s Send, src Source) string {
	if s.As != "" {
		return s.As
	}
	if n, ok := m.wire.get(s); ok {
		return n
	}
	return src.LogUUID
}
