package rpc

import (
	"fmt"
	"time"
)

// SenderStatus is what `dmsync status` shows for a volume being sent.
type SenderStatus struct {
	Volume, Peer string
	// PendingRegions and BytesToGo describe what is not yet acknowledged.
	PendingRegions int
	BytesToGo      uint64
	// Rate is bytes read from the source per second in the current or last
	// RunOnce; ETA is BytesToGo at that rate (0 if unknown).
	Rate float64
	ETA  time.Duration
	// LastAck is when the peer last acknowledged a batch durably, and
	// LastRoot the chunk-list root it reported (zero if none yet).
	LastAck  time.Time
	LastRoot ID
	Stats    Stats
}

// Status reports the sender's progress.
func (s *Sender) Status() (SenderStatus, error) {
	pending, err := s.cfg.Log.Pending(s.cfg.Volume)
	if err != nil {
		return SenderStatus{}, fmt.Errorf("status %s: %w", s.cfg.Volume, err)
	}
	regionSize, _, err := s.cfg.Log.RegionSize(s.cfg.Volume)
	if err != nil {
		return SenderStatus{}, fmt.Errorf("status %s: %w", s.cfg.Volume, err)
	}
	st := SenderStatus{Volume: s.cfg.Volume, Peer: s.cfg.Peer, PendingRegions: len(pending)}
	for _, p := range pending {
		start := p.Region * regionSize
		if start < s.cfg.Size {
			st.BytesToGo += min(regionSize, s.cfg.Size-start)
		}
	}
	s.mu.Lock()
	st.Stats = s.stats
	st.LastAck, st.LastRoot = s.lastAckAt, s.ack.Root
	started, readAtStart := s.runStarted, s.readAtStart
	s.mu.Unlock()
	if el := time.Since(started).Seconds(); !started.IsZero() && el > 0 {
		st.Rate = float64(uint64(s.read.Load())-readAtStart) / el
		if st.Rate > 0 {
			st.ETA = time.Duration(float64(st.BytesToGo) / st.Rate * float64(time.Second))
		}
	}
	return st, nil
}
