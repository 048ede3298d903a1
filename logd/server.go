package logd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Conn carries connector messages between the kernel and the server.
// The Linux implementation is a NETLINK_CONNECTOR socket (DialConnector);
// package kerneltest provides an in-memory fake kernel.
type Conn interface {
	// Receive blocks until at least one datagram arrives, then returns it
	// and every datagram already queued. The buffers stay valid until the
	// next Receive. It returns an error once ctx is done or the Conn closed.
	Receive(ctx context.Context) ([][]byte, error)
	// Send sends one netlink message (the connector reads one per datagram).
	Send(msg []byte) error
	// Close releases the connection and unblocks Receive.
	Close() error
}

// LevelTrace logs every request and reply (--log-level DEBUG-4).
const LevelTrace = slog.LevelDebug - 4

// ErrStore wraps a failed commit (see StoreError): the in-memory state is
// ahead of the disk. The server keeps answering the kernel from memory,
// refuses Replicated and PendAll, and the next start resyncs every volume
// in full (FailFlag).
var ErrStore = errors.New("logd: state store failed")

// Server is the shell around Core: it reads requests from a Conn, steps the
// core, commits each Ready to the Store (synced when it must be) and only
// then sends the replies. It implements Replicator.
type Server struct {
	log   *slog.Logger
	store Store
	feed  feed

	mu     sync.Mutex
	core   *Core
	failed error // the store failed (ErrStore); also in storeErr
	out    []byte

	storeErr      atomic.Pointer[error]
	flag          *FailFlag
	onStoreFail   func(error)
	commitTimeout time.Duration
	heartbeat     func()

	// Drop-log rate limit: at most one line per interval.
	lastDrop time.Time
	drops    int
	// served counts requests by type, for the shutdown summary.
	served [256]uint64
	trace  bool // log every request and reply (LevelTrace)
	// Time accounting for the shutdown summary.
	cycles, syncs  uint64
	busy, syncTime time.Duration
	sendTime       time.Duration
	// stats: lock-free counters for Stats; cycleStart is when handle
	// received the datagrams whose replies the current Ready sends.
	stats      serverStats
	cycleStart time.Time
}

var _ Replicator = (*Server)(nil)

// NewServer loads the store's state into a new core.
func NewServer(store Store, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	snaps, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("load dirty log state: %w", err)
	}
	c := NewCore()
	if err := c.Restore(snaps); err != nil {
		return nil, err
	}
	for _, s := range snaps {
		log.Info("recovered log", "uuid", s.UUID, "regions", s.Meta.Regions,
			"region_sectors", s.Meta.RegionSectors, "pending", len(s.Pending))
	}
	s := &Server{log: log, store: store, core: c, trace: log.Enabled(context.Background(), LevelTrace),
		commitTimeout: DefaultCommitTimeout}
	// Persist the restored generation epoch. A store that fails here
	// leaves the server serving from memory (see StoreError).
	s.readyLocked(nil)
	return s, nil
}

// Serve answers the kernel over conn until ctx is done (returning nil) or
// the store fails.
func (s *Server) Serve(ctx context.Context, conn Conn) error {
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	defer s.logServed()
	defer s.checkpoint()
	tickDone := make(chan struct{})
	defer func() { <-tickDone }()
	tickCtx, stopTicks := context.WithCancel(ctx)
	defer stopTicks()
	go func() {
		defer close(tickDone)
		s.tickLoop(tickCtx, conn)
	}()
	for {
		dgrams, err := conn.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("receive from kernel: %w", err)
		}
		s.handle(conn, dgrams)
	}
}

// TickInterval is how often the server ticks the core (see Core.Tick).
const TickInterval = time.Second

// tickLoop ticks the core until ctx is done. Each tick, once the core's
// lock was taken and the tick's Ready handled, it calls the heartbeat (the
// systemd watchdog): a log loop that hangs stops the pings.
func (s *Server) tickLoop(ctx context.Context, conn Conn) {
	t := time.NewTicker(TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		s.core.Tick()
		s.readyLocked(conn)
		hb := s.heartbeat
		s.mu.Unlock()
		if hb != nil {
			hb()
		}
	}
}

// handle steps every message of the datagrams and handles one Ready.
func (s *Server) handle(conn Conn, dgrams [][]byte) {
	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cycleStart = start
	defer func() {
		s.cycles++
		s.busy += time.Since(start)
		s.cycleStart = time.Time{}
	}()
	for _, d := range dgrams {
		for rest := d; len(rest) > 0; {
			var m Message
			var err error
			m, rest, err = DecodeMessage(rest)
			if err != nil {
				s.dropped(err)
				continue
			}
			s.served[m.Req.Type()]++
			if s.trace {
				s.log.Log(context.Background(), LevelTrace, "request", "type", m.Req.Type().String(),
					"seq", m.Req.Seq, "cn_seq", m.CnSeq, "uuid", string(m.Req.UUIDBytes()), "luid", m.Req.Luid,
					"data", len(m.Req.Data))
			}
			s.core.Step(&m)
		}
	}
	s.readyLocked(conn)
}

// readyLocked runs one Ready cycle: persist (sync if needed), send, log,
// notify, advance. It reports whether the Ready's changes are durable
// (false once the store failed: the replies are sent all the same, from
// memory).
func (s *Server) readyLocked(conn Conn) bool {
	if !s.core.HasReady() {
		return s.failed == nil
	}
	rd := s.core.Ready()
	if (len(rd.Changes) > 0 || rd.MustSync) && s.failed == nil {
		t0 := time.Now()
		err := s.commit(rd.Changes, rd.MustSync)
		if rd.MustSync {
			d := time.Since(t0)
			s.syncs++
			s.syncTime += d
			s.stats.synced(d)
		}
		if err != nil {
			s.storeFailedLocked(err)
			s.stats.failed(s.failed)
		}
	}
	var sendErr error
	for i := range rd.Replies {
		r := &rd.Replies[i]
		var err error
		if s.trace {
			s.log.Log(context.Background(), LevelTrace, "reply", "type", r.Msg.Req.Type().String(),
				"seq", r.Msg.Req.Seq, "cn_seq", r.Msg.CnSeq, "error", r.Msg.Req.Error, "data", len(r.Data()))
		}
		s.out, err = r.Append(s.out[:0])
		if err == nil && conn != nil {
			t1 := time.Now()
			err = conn.Send(s.out)
			t2 := time.Now()
			s.sendTime += t2.Sub(t1)
			if !s.cycleStart.IsZero() {
				s.stats.observe(r.Msg.Req.Type(), t2.Sub(s.cycleStart))
			}
		}
		if err != nil && sendErr == nil {
			sendErr = err
			s.log.Warn("reply not sent; the kernel will re-send the request",
				"type", r.Msg.Req.Type().String(), "seq", r.Msg.Req.Seq, "err", err)
		}
	}
	for _, n := range rd.Notes {
		lvl := slog.LevelInfo
		if n.Level == NoteWarn {
			lvl = slog.LevelWarn
		}
		s.log.Log(context.Background(), lvl, n.Msg, "uuid", n.UUID, "luid", n.Luid, "type", n.Type.String(), "seq", n.Seq)
	}
	for _, u := range rd.Notify {
		s.feed.publish(u)
	}
	s.core.Advance(rd)
	return s.failed == nil
}

// checkpoint writes what is still only in memory (CLEARs since the last
// sync), so a clean restart finds exactly the state it left.
func (s *Server) checkpoint() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return
	}
	s.core.Checkpoint()
	if !s.readyLocked(nil) {
		s.log.Error("final checkpoint of the dirty log failed", "err", s.failed)
	}
}

// RequestCounts returns how many requests of each type were served.
func (s *Server) RequestCounts() map[RequestType]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[RequestType]uint64{}
	for t, n := range s.served {
		if n > 0 {
			out[RequestType(t)] = n
		}
	}
	return out
}

func (s *Server) logServed() {
	s.mu.Lock()
	var attrs []any
	for t, n := range s.served {
		if n > 0 {
			attrs = append(attrs, RequestType(t).String(), n)
		}
	}
	attrs = append(attrs, "cycles", s.cycles, "busy", s.busy, "syncs", s.syncs, "sync_time", s.syncTime, "send_time", s.sendTime)
	s.mu.Unlock()
	s.log.Info("requests served", attrs...)
}

func (s *Server) dropped(err error) {
	s.drops++
	if now := time.Now(); now.Sub(s.lastDrop) >= time.Second {
		s.log.Warn("dropped malformed connector message", "err", err, "dropped", s.drops)
		s.lastDrop, s.drops = now, 0
	}
}

// Volumes lists the UUIDs of the logs known to the daemon.
func (s *Server) Volumes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core.Volumes()
}

// RegionSize reports a volume's region size in bytes and region count.
func (s *Server) RegionSize(uuid string) (uint64, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core.Geometry(uuid)
}

// Pending lists the volume's pending regions in ascending order.
func (s *Server) Pending(uuid string) ([]PendingRegion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core.Pending(uuid)
}

// Quiet reports whether the region has no outstanding MARK.
func (s *Server) Quiet(uuid string, region uint64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core.Quiet(uuid, region)
}

// Replicated durably removes the regions from the pending set if their
// generation is still gen and no write is in flight; it returns after the
// removal is synced.
func (s *Server) Replicated(uuid string, regions []PendingRegion) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return 0, s.failed
	}
	n := 0
	var stepErr error
	for _, p := range regions {
		ok, err := s.core.Replicated(uuid, p.Region, p.Gen)
		if err != nil {
			stepErr = fmt.Errorf("region %d: %w", p.Region, err)
			break
		}
		if ok {
			n++
		}
	}
	if n > 0 {
		// One sync for the batch; a failed one leaves every region pending
		// on the disk, and the caller counts none as replicated.
		if !s.readyLocked(nil) {
			return 0, s.failed
		}
	}
	return n, stepErr
}

// Changes returns a channel that receives a volume UUID whenever it gains
// pending regions or one of them becomes quiet; see Replicator.
func (s *Server) Changes(ctx context.Context) <-chan string {
	return s.feed.subscribe(ctx)
}
