package replicate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/directio"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/grpctransport"
)

// maxRetryDelay bounds the wait between attempts to start a sender.
const maxRetryDelay = time.Minute

// sendState is one running sender and what status reports of it.
type sendState struct {
	send   Send
	cancel context.CancelFunc // stops this send (replicate stop)
	done   chan struct{}      // closed when its goroutine has returned

	mu     sync.Mutex
	src    Source
	state  string           // set while no sender runs (starting, retrying to open)
	err    error            // the failure behind state, if any
	last   rpc.SenderStatus // the sender's last report (Stats include base)
	base   rpc.Stats        // counters of this volume's earlier senders
	sender *rpc.Sender      // the live sender
}

// SendStatus is what Status reports of one sent volume.
type SendStatus struct {
	Send
	Source         Source
	RegionSize     uint64
	PendingRegions uint64
	BytesToGo      uint64
	// PassBytes is BytesToGo when the current pass began (for a %).
	PassBytes uint64
	Rate      float64 // bytes per second
	ETA       time.Duration
	LastAck   time.Time
	PeerRoot  rpc.ID
	Stats     rpc.Stats
	Passes    int
	State     string
	// Err is the failure behind a "retrying" or "stopped" State, if any.
	Err error
	// Points describes the consistency points made for the peer.
	Points rpc.PointStats
}

func (m *Manager) startSendLocked(s Send) {
	st := &sendState{send: s, state: "starting", done: make(chan struct{}), cancel: func() {}}
	m.sends[s.Volume] = st
	if m.runCtx == nil || m.opts.Self == nil {
		st.state, st.err = "stopped: "+ErrNoIdentity.Error(), ErrNoIdentity
		close(st.done)
		return
	}
	ctx, cancel := context.WithCancel(m.runCtx)
	st.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(st.done)
		m.runSend(ctx, st)
	}()
}

func (st *sendState) set(f func()) {
	st.mu.Lock()
	f()
	st.mu.Unlock()
}

// runSend keeps one volume replicating until ctx is done: it resolves the
// volume, connects to the peer and runs an rpc.Sender, which retries failed
// batches itself. Only when the sender stops (the volume cannot be read, or
// the peer refused it for good) or the volume cannot be opened does this
// start over, with the same backoff policy. Nothing is marked replicated
// without the peer's durable ack (that is rpc.Sender's contract).
func (m *Manager) runSend(ctx context.Context, st *sendState) {
	log := m.log.With("volume", st.send.Volume, "peer", st.send.Peer)
	bo := rpc.Backoff{Min: m.opts.RetryDelay, Max: maxRetryDelay}
	for ctx.Err() == nil {
		acked, err := m.sendOnce(ctx, st)
		if ctx.Err() != nil {
			return
		}
		if acked {
			bo.Reset()
		}
		wait := bo.Next()
		st.set(func() { st.state, st.err = fmt.Sprintf("retrying in %v: %v", wait.Round(time.Second), err), err })
		log.Warn("replication stopped; starting over", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// sendOnce opens the volume and the peer and runs a sender until it stops;
// it reports whether any batch was acknowledged.
func (m *Manager) sendOnce(ctx context.Context, st *sendState) (acked bool, err error) {
	src, err := m.opts.Resolve(ctx, st.send.Volume)
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	peer, err := m.cfg.Peer(st.send.Peer)
	m.mu.Unlock()
	if err != nil {
		return false, err
	}
	f, err := directio.Open(src.Path, false)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", src.Path, err)
	}
	defer f.Close()
	client, err := grpctransport.Dial(peer.Addr, m.opts.Self, peer.ID, m.log, m.opts.Dial)
	if err != nil {
		return false, err
	}
	defer client.Close()
	chunker, err := m.chunkerFor(src, peer.ID, st.send.Chunking)
	if err != nil {
		return false, err
	}
	// Counters carry over from earlier senders of this volume.
	st.mu.Lock()
	base := st.base
	st.mu.Unlock()
	var freezer rpc.Freezer
	if m.opts.Freezer != nil {
		freezer = m.opts.Freezer(src.LogUUID)
	}
	sender, err := rpc.NewSender(rpc.SenderConfig{
		Volume: src.LogUUID, Peer: peer.ID, Source: f, Size: src.Size,
		Log: m.opts.Log, Chunker: chunker, Transport: m.peerTransport(client, st.send, src), Store: m.opts.Store,
		Logger: m.log, MinBackoff: m.opts.RetryDelay / 20, MaxBackoff: 10 * time.Second,
		Freezer: freezer, PointInterval: st.send.PointInterval.D(),
		OnProgress: func(s rpc.SenderStatus) {
			s.Stats = addStats(base, s.Stats)
			st.set(func() { st.last = s })
		},
	})
	if err != nil {
		return false, err
	}
	st.set(func() { st.src, st.sender, st.state, st.err = src, sender, "", nil })
	err = sender.Run(ctx)
	final, serr := sender.Status()
	st.set(func() {
		st.sender = nil
		st.base = addStats(base, sender.Stats())
		if serr == nil {
			final.Stats = st.base
			st.last = final
		}
	})
	return sender.Stats().Batches > 0, err
}

// addStats adds the counters of b to a.
func addStats(a, b rpc.Stats) rpc.Stats {
	return rpc.Stats{
		Batches: a.Batches + b.Batches, Failures: a.Failures + b.Failures,
		BytesRead: a.BytesRead + b.BytesRead, BytesSent: a.BytesSent + b.BytesSent,
		ChunksOffered: a.ChunksOffered + b.ChunksOffered, ChunksSent: a.ChunksSent + b.ChunksSent,
		ChunksCopied: a.ChunksCopied + b.ChunksCopied, ChunksPresent: a.ChunksPresent + b.ChunksPresent,
		ChunksPatched: a.ChunksPatched + b.ChunksPatched, ChunksResent: a.ChunksResent + b.ChunksResent,
		Replicated: a.Replicated + b.Replicated, Requeued: a.Requeued + b.Requeued,
		SkippedBusy: a.SkippedBusy + b.SkippedBusy, Passes: a.Passes + b.Passes,
		ChunksUnchanged: a.ChunksUnchanged + b.ChunksUnchanged,
	}
}

// Status reports every sent volume.
func (m *Manager) Status() []SendStatus {
	m.mu.Lock()
	states := make([]*sendState, 0, len(m.sends))
	for _, s := range m.cfg.Sends {
		if st, ok := m.sends[s.Volume]; ok {
			states = append(states, st)
		}
	}
	m.mu.Unlock()
	out := make([]SendStatus, 0, len(states))
	for _, st := range states {
		out = append(out, m.sendStatus(st))
	}
	return out
}

func (m *Manager) sendStatus(st *sendState) SendStatus {
	st.mu.Lock()
	live, last, state, stErr, base := st.sender, st.last, st.state, st.err, st.base
	s := SendStatus{Send: st.send, Source: st.src}
	st.mu.Unlock()
	// The live sender knows its rate and progress now, not at its last ack.
	if live != nil {
		if ls, err := live.Status(); err == nil {
			ls.Stats = addStats(base, ls.Stats)
			if ls.LastAck.Before(last.LastAck) {
				ls.LastAck, ls.LastRoot = last.LastAck, last.LastRoot
			}
			last = ls
		}
		state, stErr = last.State, last.Err
	} else if state == "" {
		state, stErr = last.State, last.Err
	}
	s.State, s.Err, s.Rate, s.ETA, s.PassBytes = state, stErr, last.Rate, last.ETA, last.PassBytes
	s.LastAck, s.PeerRoot, s.Stats, s.Passes = last.LastAck, last.LastRoot, last.Stats, last.Stats.Passes
	s.Points = last.Points
	if s.Source.LogUUID == "" {
		return s
	}
	if size, _, err := m.opts.Log.RegionSize(s.Source.LogUUID); err == nil {
		s.RegionSize = size
	}
	if p, err := m.opts.Log.Pending(s.Source.LogUUID); err == nil {
		s.PendingRegions = uint64(len(p))
		s.BytesToGo = min(s.PendingRegions*s.RegionSize, s.Source.Size)
	}
	if s.Rate > 0 && s.BytesToGo > 0 {
		s.ETA = time.Duration(float64(s.BytesToGo) / s.Rate * float64(time.Second))
	}
	return s
}

func (m *Manager) sendState(volume string) (*sendState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.sends[volume]
	if !ok {
		return nil, fmt.Errorf("%w %q: start it with `dmsync replicate %s --to PEER`", ErrNoVolume, volume, volume)
	}
	return st, nil
}

// Wait returns once volume has no pending region left after at least one
// successful pass (every region it had was acknowledged by the peer), or
// with ctx's error.
func (m *Manager) Wait(ctx context.Context, volume string) (SendStatus, error) {
	st, err := m.sendState(volume)
	if err != nil {
		return SendStatus{}, err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		// What is pending counts as replicated only with a point: ask for
		// one now, whatever the volume's point interval.
		st.requestPoint()
		s := m.sendStatus(st)
		if s.Passes > 0 && s.Source.LogUUID != "" && s.PendingRegions == 0 {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-tick.C:
		}
	}
}

// verifyAttempts bounds how often Verify reads a replica that was applying.
const verifyAttempts = 3

// VerifyOptions tunes Verify; the zero value scrubs the replica's image at
// the peer's default rate and repairs nothing.
type VerifyOptions struct {
	// Repair makes the regions holding differing ranges pending again (the
	// peer drops its index over them first), so they are sent again.
	Repair bool
	// Rate bounds the peer's read rate in bytes per second (0: its
	// default, rpc.DefaultScrubRate).
	Rate uint64
	// Index also compares the source's chunk list with the replica's
	// index (reads the source a second time).
	Index bool
}

// VerifyResult compares a sent volume with its replica.
type VerifyResult struct {
	rpc.VerifyResult
	// RegionSize is the volume's region size; Repaired lists the regions
	// made pending again (VerifyOptions.Repair).
	RegionSize uint64
	Repaired   []uint64
}

// Verify compares the source volume with the bytes of the peer's image:
// the peer re-reads and hashes its image at a bounded rate while this node
// reads its source in the same pieces; with o.Repair the differing ranges
// are made pending again. A replica that was applying a batch while it was
// read is read again, up to verifyAttempts times.
func (m *Manager) Verify(ctx context.Context, volume string, o VerifyOptions) (VerifyResult, error) {
	st, err := m.sendState(volume)
	if err != nil {
		return VerifyResult{}, err
	}
	src, err := m.opts.Resolve(ctx, st.send.Volume)
	if err != nil {
		return VerifyResult{}, err
	}
	m.mu.Lock()
	peer, err := m.cfg.Peer(st.send.Peer)
	m.mu.Unlock()
	if err != nil {
		return VerifyResult{}, err
	}
	f, err := directio.Open(src.Path, false)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("open %s: %w", src.Path, err)
	}
	defer f.Close()
	source, onScrub, untrack := m.trackVerify(volume, f, src.Size, o.Index)
	defer untrack()
	client, err := grpctransport.Dial(peer.Addr, m.opts.Self, peer.ID, m.log, m.opts.Dial)
	if err != nil {
		return VerifyResult{}, err
	}
	defer client.Close()
	chunker, err := m.chunkerFor(src, peer.ID, st.send.Chunking)
	if err != nil {
		return VerifyResult{}, err
	}
	sender, err := rpc.NewSender(rpc.SenderConfig{
		Volume: src.LogUUID, Peer: peer.ID, Source: source, Size: src.Size,
		Log: m.opts.Log, Chunker: chunker, Transport: m.peerTransport(client, st.send, src), Logger: m.log,
	})
	if err != nil {
		return VerifyResult{}, err
	}
	// A replica that applied a batch or a point while it was read cannot
	// answer (its bytes moved under the scrub): read it again, a few
	// times, as a quiet volume's replica settles within one apply.
	var v rpc.VerifyResult
	for attempt := 1; ; attempt++ {
		v, err = sender.VerifyWith(ctx, rpc.VerifyOptions{Rate: o.Rate, Index: o.Index, OnScrub: onScrub})
		if err != nil || !v.Applying || attempt == verifyAttempts {
			break
		}
		m.log.Info("verify: the replica applied a batch while it was read; reading again", "volume", volume, "attempt", attempt)
		select {
		case <-ctx.Done():
			return VerifyResult{VerifyResult: v}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	res := VerifyResult{VerifyResult: v}
	if err != nil {
		return res, err
	}
	if size, _, err := m.opts.Log.RegionSize(src.LogUUID); err == nil {
		res.RegionSize = size
	}
	if !o.Repair || len(v.Differ) == 0 {
		return res, nil
	}
	if _, ok := m.opts.Log.(rpc.RegionPender); !ok {
		return res, admin.Errorf(admin.ErrUnsupported, "this dirty log cannot make regions pending again")
	}
	// The live sender must not skip the regions as unchanged since the
	// peer's last ack: it forgets what it remembered, before they pend.
	var live []*rpc.Sender
	st.mu.Lock()
	if st.sender != nil {
		live = append(live, st.sender)
	}
	st.mu.Unlock()
	res.Repaired, err = sender.Repair(ctx, v.Differ, live...)
	if err != nil {
		return res, err
	}
	m.log.Info("verify --repair: differing regions pending again", "volume", volume, "ranges", len(v.Differ), "regions", len(res.Repaired))
	return res, nil
}

// ReceiveStatus is what Status reports of one received volume.
type ReceiveStatus struct {
	Receive
	Root rpc.RootInfo
	Err  error
}

// Receiving reports every volume this node receives.
func (m *Manager) Receiving() []ReceiveStatus {
	m.mu.Lock()
	recvs := append([]Receive(nil), m.cfg.Receives...)
	recv := m.recv
	m.mu.Unlock()
	out := make([]ReceiveStatus, 0, len(recvs))
	for _, r := range recvs {
		s := ReceiveStatus{Receive: r}
		if recv == nil {
			s.Err = errors.New("receiver not running")
		} else {
			s.Root, s.Err = recv.Root(r.From, r.Volume)
		}
		out = append(out, s)
	}
	return out
}
