package rpc

import (
	"fmt"
	"time"
)

// SenderStatus is what `dmsync status` shows for a volume being sent.
type SenderStatus struct {
	Volume, Peer string
	// State is what the sender is doing: starting, sending, idle,
	// "retrying in ...: error" or "stopped: error".
	State string
	// Err is the failure behind a "retrying" or "stopped" State (nil
	// otherwise): callers classify it with errors.Is, not by its text.
	Err error
	// PendingRegions and BytesToGo describe what is not yet acknowledged.
	PendingRegions int
	BytesToGo      uint64
	// PassBytes is BytesToGo when the current (or last) pass began, so
	// 1 - BytesToGo/PassBytes is the pass's progress.
	PassBytes uint64
	// Rate is bytes read from the source per second since the current
	// pass began (or over the last pass that read anything); ETA is
	// BytesToGo at that rate (0 if unknown).
	Rate float64
	ETA  time.Duration
	// LastAck is when the peer last acknowledged a batch durably, and
	// LastRoot the root it reported (zero if none yet).
	LastAck  time.Time
	LastRoot ID
	Stats    Stats
	// Points describes the consistency points made for the peer.
	Points PointStats
}

// Done returns the fraction of the current pass acknowledged, in [0, 1].
func (st SenderStatus) Done() float64 {
	if st.PassBytes == 0 || st.BytesToGo >= st.PassBytes {
		return 0
	}
	return 1 - float64(st.BytesToGo)/float64(st.PassBytes)
}

// rateWindow measures the source read rate over a pass: the one rate
// calculator of replication.
type rateWindow struct {
	active    bool
	start     time.Time
	read0     uint64
	toGo0     uint64
	last      float64 // bytes/s of the last pass that read anything
	lastToGo0 uint64
}

// Status reports the sender's progress.
func (s *Sender) Status() (SenderStatus, error) {
	st := SenderStatus{Volume: s.cfg.Volume, Peer: s.cfg.Peer}
	var err error
	if st.PendingRegions, st.BytesToGo, err = s.toGo(); err != nil {
		return SenderStatus{}, fmt.Errorf("status %s: %w", s.cfg.Volume, err)
	}
	read := uint64(s.read.Load())
	s.mu.Lock()
	st.State, st.Err, st.Stats = s.state, s.lastErr, s.stats
	st.LastAck, st.LastRoot = s.lastAckAt, s.ack.Root
	w := s.rate
	s.mu.Unlock()
	st.Points = s.Points()
	st.Rate, st.PassBytes = w.last, w.lastToGo0
	if w.active {
		st.PassBytes = w.toGo0
		if el := time.Since(w.start).Seconds(); read > w.read0 && el > 0 {
			st.Rate = float64(read-w.read0) / el
		}
	}
	if st.Rate > 0 {
		st.ETA = time.Duration(float64(st.BytesToGo) / st.Rate * float64(time.Second))
	}
	return st, nil
}

// toGo counts the pending regions and their bytes.
func (s *Sender) toGo() (int, uint64, error) {
	pending, err := s.cfg.Log.Pending(s.cfg.Volume)
	if err != nil {
		return 0, 0, err
	}
	regionSize, _, err := s.cfg.Log.RegionSize(s.cfg.Volume)
	if err != nil {
		return 0, 0, err
	}
	var bytes uint64
	for _, p := range pending {
		if start := p.Region * regionSize; start < s.cfg.Size {
			bytes += min(regionSize, s.cfg.Size-start)
		}
	}
	return len(pending), bytes, nil
}

// beginRate starts measuring a pass.
func (s *Sender) beginRate() {
	_, toGo, _ := s.toGo()
	s.mu.Lock()
	s.rate.active, s.rate.start, s.rate.read0, s.rate.toGo0 = true, time.Now(), uint64(s.read.Load()), toGo
	s.mu.Unlock()
}

// endRate ends the pass's measurement; a pass that read nothing (nothing
// was pending) keeps the last rate.
func (s *Sender) endRate() {
	read := uint64(s.read.Load())
	s.mu.Lock()
	w := &s.rate
	if el := time.Since(w.start).Seconds(); read > w.read0 && el > 0 {
		w.last, w.lastToGo0 = float64(read-w.read0)/el, w.toGo0
	}
	w.active = false
	s.mu.Unlock()
}

// setState records what the sender does (working: no failure) and
// reports it if it changed.
func (s *Sender) setState(state string) { s.setFailure(state, nil) }

// setFailure records what the sender does and the failure behind it, and
// reports it if it changed.
func (s *Sender) setFailure(state string, err error) {
	s.mu.Lock()
	changed := s.state != state
	s.state, s.lastErr = state, err
	s.mu.Unlock()
	if changed {
		s.progress()
	}
}

// progress hands the current status to OnProgress.
func (s *Sender) progress() {
	if s.cfg.OnProgress == nil {
		return
	}
	st, err := s.Status()
	if err != nil {
		return
	}
	s.cfg.OnProgress(st)
}
