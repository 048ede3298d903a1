package rpc

// Consistency points on the sender. The peer's replica only ever moves
// from one point in time of the volume to the next (the receiver's side is
// point.go):
//
//  1. While the volume is live, pending regions are sent as usual, but
//     once the peer holds a point, as batches staged for the point being
//     built (Offer.Point); the regions stay pending, and the generation
//     each was read at is kept.
//  2. When nothing more can be sent (and PointInterval has passed since the
//     last point), the sender freezes the volume's writes (Freezer: the
//     device on top of the mirror is suspended, its queue flushed, so the
//     volume is as a power cut would leave it), lists the pending regions,
//     reads those written since they were staged into memory, and thaws.
//     The pause is bounded by MaxCaptureBytes and MaxPause.
//  3. It sends what it read as staged batches, commits the point (the
//     receiver applies it whole), and only then marks every region of the
//     point replicated, each with the generation it was read at: a region
//     written after its read stays pending, for the next point.
//
// Any failure drops the point (the receiver drops its staged batches when
// it sees the next point's token), except a freeze that expired, which is
// just tried again.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/dmsync/dmsync/logd"
)

// Freezer freezes the volume's writes for a consistency point, for at most
// maxPause (after which it thaws by itself). Errors wrapping ErrNoPoints
// say points cannot be made for this volume at all.
type Freezer func(ctx context.Context, maxPause time.Duration) (Freeze, error)

// Freeze is a frozen volume.
type Freeze struct {
	// At is when the volume was frozen: the point's time.
	At time.Time
	// Thaw lets writes through again; held reports whether the volume
	// stayed frozen from At until now.
	Thaw func(ctx context.Context) (held bool, pause time.Duration, err error)
}

// ErrNoPoints wraps why consistency points cannot be made for a volume
// (no device above the mirror to freeze, a chunking that points do not
// support): the sender then writes its batches in place.
var ErrNoPoints = errors.New("consistency points unavailable")

// errFreezeExpired: the volume thawed before the capture was read, so the
// capture is not a point in time; the point is tried again.
var errFreezeExpired = errors.New("the freeze expired before the capture was read")

// PointStats describes the sender's consistency points.
type PointStats struct {
	// Last is the peer's recovery point, as its last commit reported it
	// (Seq 0: none made by this sender yet).
	Last RecoveryPoint
	// Points counts the points made; Dropped those dropped after a
	// freeze (capture too slow, or its send failed).
	Points, Dropped int
	// LastPause and MaxPause are the I/O pauses of the last point and the
	// longest one; CapturedBytes is what the last point read while
	// frozen.
	LastPause, MaxPause time.Duration
	CapturedBytes       uint64
	// Unavailable says why no points are made (empty: they are).
	Unavailable string
}

// pointState is the point being built. Batches' finishers record into it
// concurrently; the rest runs on drain's goroutine.
type pointState struct {
	mu        sync.Mutex
	peerPoint bool // the peer holds a point: batches are staged
	token     uint64
	regions   map[uint64]uint64 // region -> generation staged at
	batches   int               // staged batches acknowledged
	dirty     bool              // sent in place since the last point
	last      time.Time         // when the last point was made
	wanted    bool              // a point was asked for (RequestPoint)
	noPoints  time.Time         // when ErrNoPoints was last seen
	stats     PointStats
}

func (p *pointState) init() { p.regions = map[uint64]uint64{} }

func (p *pointState) staged() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peerPoint
}

func (p *pointState) setStaged() {
	p.mu.Lock()
	p.peerPoint = true
	p.mu.Unlock()
}

// offerToken returns the token batches are staged under now (0: in
// place), picking a new one for a new point.
func (p *pointState) offerToken() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.peerPoint {
		return 0
	}
	if p.token == 0 {
		p.token = newToken()
	}
	return p.token
}

func newToken() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if t := binary.BigEndian.Uint64(b[:]); t != 0 {
			return t
		}
	}
}

// unsent drops from pending the regions staged for the point and not
// written since.
func (p *pointState) unsent(pending []logd.PendingRegion) []logd.PendingRegion {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.regions) == 0 {
		return pending
	}
	out := pending[:0:0]
	for _, r := range pending {
		if g, ok := p.regions[r.Region]; !ok || g != r.Gen {
			out = append(out, r)
		}
	}
	return out
}

// record adds regions of a batch staged under token to the point; batch
// counts an acknowledged staged batch. A batch of a point since dropped
// adds nothing.
func (p *pointState) record(token uint64, regions []logd.PendingRegion, batch bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if token != p.token {
		return
	}
	for _, r := range regions {
		p.regions[r.Region] = r.Gen
	}
	if batch {
		p.batches++
	}
}

func (p *pointState) sentInPlace() {
	p.mu.Lock()
	p.dirty = true
	p.mu.Unlock()
}

// abandon drops the point being built: its regions stay pending and are
// sent again, under a new token.
func (p *pointState) abandon() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.token != 0 && (len(p.regions) > 0 || p.batches > 0) {
		p.stats.Dropped++
	}
	p.token, p.batches = 0, 0
	clear(p.regions)
}

// RequestPoint asks for a consistency point as soon as everything pending
// was sent, whatever PointInterval says.
func (s *Sender) RequestPoint() {
	s.pt.mu.Lock()
	s.pt.wanted = true
	s.pt.mu.Unlock()
}

// Points returns the sender's point statistics.
func (s *Sender) Points() PointStats {
	s.pt.mu.Lock()
	defer s.pt.mu.Unlock()
	return s.pt.stats
}

// noPointsRetry is how long a sender waits before trying a volume that
// could not make points again.
const noPointsRetry = time.Minute

// maybePoint makes a consistency point if one is due: there is something
// to commit, or one was asked for, and PointInterval has passed.
func (s *Sender) maybePoint(ctx context.Context) (bool, error) {
	if s.cfg.Freezer == nil {
		return false, nil
	}
	p := &s.pt
	p.mu.Lock()
	due := p.dirty || p.wanted || len(p.regions) > 0 || p.batches > 0 || !p.peerPoint
	if time.Since(p.last) < s.cfg.PointInterval && !p.wanted {
		due = false
	}
	if !p.noPoints.IsZero() && time.Since(p.noPoints) < noPointsRetry && !p.wanted {
		due = false
	}
	p.mu.Unlock()
	if !due {
		return false, nil
	}
	err := s.makePoint(ctx)
	if errors.Is(err, ErrNoPoints) {
		p.mu.Lock()
		first := p.stats.Unavailable == ""
		p.noPoints, p.stats.Unavailable, p.wanted = time.Now(), err.Error(), false
		p.mu.Unlock()
		if first {
			s.log.Warn("no consistency points for this volume: the peer's replica is written in place", "err", err)
		}
		return false, nil
	}
	if errors.Is(err, errNotConverged) {
		return false, nil // more was written meanwhile: send it first
	}
	return err == nil, err
}

// captureLimit is how much a freeze may read: MaxCaptureBytes, or what the
// source reads in half of MaxPause at the rate measured, if more. (A
// fixed bound alone would never be met while writes dirty more regions
// than it per pass, and the replica would get no point.)
func (s *Sender) captureLimit() uint64 {
	s.mu.Lock()
	rate := s.rate.last
	s.mu.Unlock()
	return max(s.cfg.MaxCaptureBytes, uint64(rate*s.cfg.MaxPause.Seconds()/2))
}

// errNotConverged: more is pending than a freeze may read; it is sent live
// first.
var errNotConverged = errors.New("too much pending to freeze")

func (s *Sender) makePoint(ctx context.Context) error {
	if _, ok := s.cfg.Chunker.(FixedChunker); !ok {
		return fmt.Errorf("%w: they need the fixed chunking (a content-defined chunk may reach past the regions read while frozen)", ErrNoPoints)
	}
	regionSize, _, err := s.cfg.Log.RegionSize(s.cfg.Volume)
	if err != nil {
		return fmt.Errorf("region size: %w", err)
	}
	// A first look, unfrozen: if more is pending than a freeze may read,
	// send more first.
	pending, err := s.cfg.Log.Pending(s.cfg.Volume)
	if err != nil {
		return fmt.Errorf("pending regions: %w", err)
	}
	limit := s.captureLimit()
	if uint64(len(s.pt.unsent(pending)))*regionSize > limit {
		return errNotConverged
	}
	s.setState("freezing for a consistency point")
	fr, err := s.cfg.Freezer(ctx, s.cfg.MaxPause)
	if err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	capture, todo, cerr := s.capture(regionSize, limit)
	held, pause, terr := fr.Thaw(context.WithoutCancel(ctx))
	s.pt.mu.Lock()
	s.pt.stats.LastPause = pause
	s.pt.stats.MaxPause = max(s.pt.stats.MaxPause, pause)
	s.pt.mu.Unlock()
	switch {
	case cerr != nil:
		return cerr
	case terr != nil:
		return fmt.Errorf("thaw: %w", terr)
	case !held:
		return fmt.Errorf("%w (it took longer than %s; the capture is dropped)", errFreezeExpired, s.cfg.MaxPause)
	}
	s.log.Debug("froze for a consistency point", "pause", pause, "regions", len(todo), "bytes", capture.bytes)
	if len(todo) > 0 {
		if _, _, err := s.sendRegions(ctx, todo, capture, false); err != nil {
			return err
		}
	}
	s.pt.mu.Lock()
	token := s.pt.token
	if token == 0 {
		token = newToken()
		s.pt.token = token
	}
	batches := s.pt.batches
	var regions []logd.PendingRegion
	for r, g := range s.pt.regions {
		regions = append(regions, logd.PendingRegion{Region: r, Gen: g})
	}
	s.pt.mu.Unlock()
	s.setState("committing a consistency point")
	c, err := s.cfg.Transport.Commit(ctx, Commit{Volume: s.cfg.Volume, Point: token, Batches: batches, TakenAt: fr.At})
	if err != nil {
		return fmt.Errorf("commit point: %w", err)
	}
	// Only now do the point's regions count as replicated.
	n, err := s.cfg.Log.Replicated(s.cfg.Volume, regions)
	if err != nil {
		return fmt.Errorf("mark %d regions of the point replicated: %w", len(regions), err)
	}
	s.count(func(st *Stats) {
		st.Replicated += n
		st.Requeued += len(regions) - n
	})
	s.mu.Lock()
	s.ack = Ack{HasRoot: true, Root: c.Root, Chunks: c.Chunks}
	s.lastAckAt = time.Now()
	s.mu.Unlock()
	s.pt.mu.Lock()
	s.pt.peerPoint, s.pt.token, s.pt.batches, s.pt.dirty, s.pt.wanted = true, 0, 0, false, false
	clear(s.pt.regions)
	s.pt.last = time.Now()
	s.pt.stats.Last = c.Point
	s.pt.stats.Points++
	s.pt.stats.CapturedBytes = capture.bytes
	s.pt.stats.Unavailable = ""
	s.pt.noPoints = time.Time{}
	s.pt.mu.Unlock()
	s.log.Info("consistency point made", "seq", c.Point.Seq, "taken_at", fr.At.UTC(), "pause", pause, "regions", len(regions))
	s.progress()
	return nil
}

// capture reads, while the volume is frozen, every pending region not
// staged as it is now, and returns them with their generations.
func (s *Sender) capture(regionSize, limit uint64) (*captured, []logd.PendingRegion, error) {
	pending, err := s.cfg.Log.Pending(s.cfg.Volume)
	if err != nil {
		return nil, nil, fmt.Errorf("pending regions: %w", err)
	}
	todo := s.pt.unsent(pending)
	c := &captured{regions: map[uint64][]byte{}, regionSize: regionSize}
	var keep []logd.PendingRegion
	for _, p := range todo {
		start := p.Region * regionSize
		if start >= s.cfg.Size {
			continue
		}
		end := min(start+regionSize, s.cfg.Size)
		if c.bytes+(end-start) > limit {
			return nil, nil, errNotConverged
		}
		buf := make([]byte, end-start)
		if _, err := s.src.ReadAt(buf, int64(start)); err != nil && !(errors.Is(err, io.EOF) && end == s.cfg.Size) {
			return nil, nil, fmt.Errorf("%w: read region %d while frozen: %w", ErrSource, p.Region, err)
		}
		c.regions[p.Region] = buf
		c.bytes += end - start
		keep = append(keep, p)
	}
	return c, keep, nil
}

// captured serves reads of the regions read while frozen, and nothing
// else: a batch of the point never reads the live volume.
type captured struct {
	regions    map[uint64][]byte
	regionSize uint64
	bytes      uint64
}

func (c *captured) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		pos := uint64(off) + uint64(n)
		r := pos / c.regionSize
		buf, ok := c.regions[r]
		if !ok {
			return n, fmt.Errorf("read at %d: region %d was not captured", pos, r)
		}
		k := copy(p[n:], buf[pos-r*c.regionSize:])
		if k == 0 {
			return n, io.EOF
		}
		n += k
	}
	return n, nil
}

var _ io.ReaderAt = (*captured)(nil)
