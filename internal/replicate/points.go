package replicate

import (
	"context"
	"fmt"
	"time"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/rpc"
)

// ErrNoPoint is returned by Snapshot when the volume cannot have points.
var ErrNoPoint = admin.Define(admin.ErrNotReady, "no consistency points for this volume")

// requestPoint asks the live sender, if any, for a point as soon as
// everything pending was sent.
func (st *sendState) requestPoint() {
	st.mu.Lock()
	s := st.sender
	st.mu.Unlock()
	if s != nil {
		s.RequestPoint()
	}
}

// Snapshot makes a consistency point of volume now: once what is pending
// was sent, the volume is frozen for a moment and the peer applies the
// point. It returns the point's statistics once the peer applied a point
// taken after the call began, or ctx's error.
func (m *Manager) Snapshot(ctx context.Context, volume string) (rpc.PointStats, error) {
	st, err := m.sendState(volume)
	if err != nil {
		return rpc.PointStats{}, err
	}
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st.requestPoint()
		s := m.sendStatus(st)
		if p := s.Points; p.Last.Seq > 0 && !p.Last.TakenAt.Before(start) {
			return p, nil
		}
		if u := s.Points.Unavailable; u != "" {
			return s.Points, fmt.Errorf("%w %s: %s", ErrNoPoint, volume, u)
		}
		select {
		case <-ctx.Done():
			return s.Points, ctx.Err()
		case <-tick.C:
		}
	}
}

func pointToPB(p rpc.PointStats, interval time.Duration) *adminpb.PointStatus {
	r := &adminpb.PointStatus{
		Seq: p.Last.Seq, LastPauseNano: int64(p.LastPause), MaxPauseNano: int64(p.MaxPause),
		Points: uint64(p.Points), Dropped: uint64(p.Dropped), CapturedBytes: p.CapturedBytes,
		IntervalNano: int64(interval), Unavailable: p.Unavailable,
	}
	if p.Last.Seq > 0 {
		r.TakenAtUnixNano, r.AppliedAtUnixNano = p.Last.TakenAt.UnixNano(), p.Last.AppliedAt.UnixNano()
	}
	return r
}

// Snapshot implements adminpb.ReplicationServer.
func (s *Server) Snapshot(ctx context.Context, req *adminpb.SnapshotRequest) (*adminpb.SnapshotResponse, error) {
	if t := time.Duration(req.GetTimeoutNano()); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	p, err := s.m.Snapshot(ctx, req.GetVolume())
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	var interval time.Duration
	if st, err := s.m.sendState(req.GetVolume()); err == nil {
		interval = st.send.PointInterval.D()
	}
	return &adminpb.SnapshotResponse{Point: pointToPB(p, interval)}, nil
}
