package replicate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dmsync/dmsync/internal/directio"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/grpctransport"
)

// maxRetryDelay bounds the wait between attempts of a failing sender.
const maxRetryDelay = time.Minute

// sendState is one running sender and what status reports of it.
type sendState struct {
	send Send

	mu       sync.Mutex
	src      Source
	stats    rpc.Stats
	passes   int // completed RunOnce calls without error
	lastAck  time.Time
	peerRoot rpc.ID
	state    string
	rate     float64     // bytes read per second, smoothed
	sender   *rpc.Sender // the live sender, for progress within a pass
	failed   int         // its failed attempts when the last pass ended
}

// SendStatus is what Status reports of one sent volume.
type SendStatus struct {
	Send
	Source         Source
	RegionSize     uint64
	PendingRegions uint64
	BytesToGo      uint64
	Rate           float64 // bytes per second
	ETA            time.Duration
	LastAck        time.Time
	PeerRoot       rpc.ID
	Stats          rpc.Stats
	Passes         int
	State          string
}

func (m *Manager) startSendLocked(s Send) {
	st := &sendState{send: s, state: "starting"}
	m.sends[s.Volume] = st
	if m.runCtx == nil || m.opts.Self == nil {
		st.state = "stopped: " + ErrNoIdentity.Error()
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.runSend(m.runCtx, st)
	}()
}

func (st *sendState) set(f func()) {
	st.mu.Lock()
	f()
	st.mu.Unlock()
}

// runSend keeps one volume replicating until ctx is done: it resolves the
// volume, connects to the peer and sends every pending region, waiting for
// the dirty log's change feed in between. Any failure starts over after a
// delay; nothing is marked replicated without the peer's durable ack
// (that is rpc.Sender's contract).
func (m *Manager) runSend(ctx context.Context, st *sendState) {
	log := m.log.With("volume", st.send.Volume, "peer", st.send.Peer)
	delay := m.opts.RetryDelay
	for ctx.Err() == nil {
		st.mu.Lock()
		passes := st.passes
		st.mu.Unlock()
		err := m.sendOnce(ctx, st)
		if ctx.Err() != nil {
			return
		}
		// Back off while nothing succeeds (a refused offer stays refused
		// until an operator acts); start quick again after progress.
		st.mu.Lock()
		if st.passes > passes {
			delay = m.opts.RetryDelay
		}
		st.state = fmt.Sprintf("retrying in %v: %v", delay, err)
		st.mu.Unlock()
		log.Warn("replication stopped; starting over", "err", err, "in", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

func (m *Manager) sendOnce(ctx context.Context, st *sendState) error {
	src, err := m.opts.Resolve(ctx, st.send.Volume)
	if err != nil {
		return err
	}
	m.mu.Lock()
	peer, err := m.cfg.Peer(st.send.Peer)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	f, err := directio.Open(src.Path, false)
	if err != nil {
		return fmt.Errorf("open %s: %w", src.Path, err)
	}
	defer f.Close()
	client, err := grpctransport.Dial(peer.Addr, m.opts.Self, peer.ID, m.log, m.opts.Dial)
	if err != nil {
		return err
	}
	defer client.Close()
	sender, err := rpc.NewSender(rpc.SenderConfig{
		Volume: src.LogUUID, Peer: peer.ID, Source: f, Size: src.Size,
		Log: m.opts.Log, Chunker: m.opts.Chunker, Transport: client, Store: m.opts.Store,
		Logger: m.log, MaxAttempts: 5,
	})
	if err != nil {
		return err
	}
	st.set(func() {
		st.src, st.sender, st.failed = src, sender, 0
		if st.state == "starting" {
			st.state = "sending"
		}
	})
	defer st.set(func() { st.sender = nil })
	changes := m.opts.Log.Changes(ctx)
	for {
		before := time.Now()
		prev := sender.Stats()
		stats, err := sender.RunOnce(ctx)
		took := time.Since(before)
		st.set(func() {
			if stats.Batches > prev.Batches {
				st.lastAck = time.Now()
				st.peerRoot = sender.LastAck().Root
			}
			if read := stats.BytesRead - prev.BytesRead; read > 0 && took > 0 {
				r := float64(read) / took.Seconds()
				if st.rate == 0 {
					st.rate = r
				} else {
					st.rate = 0.7*st.rate + 0.3*r
				}
			}
			st.stats, st.failed = stats, stats.Failures
			if err == nil {
				st.passes++
				st.state = "idle"
				if p, perr := m.opts.Log.Pending(src.LogUUID); perr == nil && len(p) > 0 {
					st.state = fmt.Sprintf("sending (%d regions busy or new)", len(p))
				}
			}
		})
		if err != nil {
			if ctx.Err() != nil || rpc.Permanent(err) {
				return err
			}
			st.set(func() { st.state = "retrying: " + err.Error() })
		}
		// Wait for new writes to this volume, or a second for regions that
		// were skipped because a write was in flight.
	wait:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case u, ok := <-changes:
				if !ok {
					return ctx.Err()
				}
				if u == src.LogUUID {
					break wait
				}
			case <-time.After(time.Second):
				break wait
			}
		}
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
	s := SendStatus{
		Send: st.send, Source: st.src, Rate: st.rate, LastAck: st.lastAck, PeerRoot: st.peerRoot,
		Stats: st.stats, Passes: st.passes, State: st.state,
	}
	live, failed := st.sender, st.failed
	st.mu.Unlock()
	// Within a pass the live sender knows more: batches acknowledged and
	// attempts failed since the pass began.
	if live != nil {
		if ls, err := live.Status(); err == nil {
			s.Stats = ls.Stats
			if ls.LastAck.After(s.LastAck) {
				s.LastAck, s.PeerRoot = ls.LastAck, ls.LastRoot
			}
			if n := ls.Stats.Failures - failed; n > 0 {
				s.State = fmt.Sprintf("retrying: %d failed attempts in this pass (the dmsyncd log has each error)", n)
			}
		}
	}
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

// VerifyResult compares a sent volume with its replica.
type VerifyResult = rpc.VerifyResult

// Verify reads the whole source volume, computes its root and compares it
// with the root the peer reports for its replica.
func (m *Manager) Verify(ctx context.Context, volume string) (VerifyResult, error) {
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
	client, err := grpctransport.Dial(peer.Addr, m.opts.Self, peer.ID, m.log, m.opts.Dial)
	if err != nil {
		return VerifyResult{}, err
	}
	defer client.Close()
	sender, err := rpc.NewSender(rpc.SenderConfig{
		Volume: src.LogUUID, Peer: peer.ID, Source: f, Size: src.Size,
		Log: m.opts.Log, Chunker: m.opts.Chunker, Transport: client, Logger: m.log,
	})
	if err != nil {
		return VerifyResult{}, err
	}
	return sender.Verify(ctx)
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
