package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/pebble"
)

// SenderConfig configures a Sender for one volume and one peer.
type SenderConfig struct {
	// Volume is the volume's UUID as the dirty log knows it.
	Volume string
	// Peer is the receiver's node id (for logs and progress records).
	Peer string
	// Source reads the volume's data as it is on disk: below dm-crypt, so
	// the peer only ever gets ciphertext.
	Source io.ReaderAt
	// Size is the volume size in bytes.
	Size uint64
	// Log is the dirty log: which regions are pending, quiet, replicated.
	Log       logd.Replicator
	Chunker   Chunker
	Transport Transport
	// Store records progress per peer; nil records nothing.
	Store  *pebble.ReplicaStore
	Logger *slog.Logger
	// MaxBatchBytes bounds the bytes one batch offers, and the bytes read
	// at once (default 16 MiB). Every batch costs B two fsyncs and A one:
	// 64 MiB batches synced 1 GiB in 1.5-1.8 s against 1.9-2.2 s, but
	// they hold three times the memory on A, and a guest run with them
	// showed a soft lockup in a replicator's page fault (README).
	MaxBatchBytes uint64
	// MaxBatchRead bounds the bytes of the volume one batch covers
	// (default 256 MiB, and at least MaxBatchBytes): after scattered writes
	// a batch reads far more than it offers.
	MaxBatchRead uint64
	// MinBackoff and MaxBackoff bound the wait between retries (defaults
	// 100 ms and 10 s); the wait doubles per failure, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts bounds consecutive failed batches in one RunOnce before
	// it gives up (0: retry until ctx is done).
	MaxAttempts int
	// Inflight is how many batches may await their acks at once
	// (default 2).
	Inflight int
	// OnProgress, if set, is called with the sender's status after every
	// acknowledged batch and whenever its state changes (sending, idle,
	// retrying, stopped). It must not block; it runs on the sender's
	// goroutines.
	OnProgress func(SenderStatus)
	// Freezer, if set, makes consistency points (senderpoint.go): the
	// peer's replica then only ever moves from one point in time of the
	// volume to the next. Without it, batches are written in place.
	Freezer Freezer
	// PointInterval is the least time between two points (0: a point as
	// soon as every pending region was sent).
	PointInterval time.Duration
	// MaxCaptureBytes bounds what is read while the volume is frozen
	// (default 64 MiB): with more pending, more is sent first.
	MaxCaptureBytes uint64
	// MaxPause bounds one freeze (default 2 s); a capture that takes
	// longer is dropped and made again.
	MaxPause time.Duration
}

// Stats counts a sender's work.
type Stats struct {
	Batches       int    // acknowledged batches
	Failures      int    // failed batch attempts
	BytesRead     uint64 // bytes read from the source (every read counted)
	BytesSent     uint64 // chunk payload bytes sent
	ChunksOffered int
	ChunksSent    int
	ChunksCopied  int // chunks the receiver copied locally
	ChunksPresent int // chunks the receiver already had in place
	ChunksPatched int // chunks sent as their changed 4 KiB blocks only
	ChunksResent  int // patched chunks that did not verify, sent whole
	Replicated    int // regions marked replicated
	Requeued      int // regions written during their read: stay pending
	SkippedBusy   int // regions skipped because a write was in flight
	Passes        int // passes that left nothing sendable pending
	// ChunksUnchanged counts chunks read but not offered: their
	// fingerprint was the one the peer last acknowledged.
	ChunksUnchanged int
}

// DefaultMaxBatchBytes is SenderConfig.MaxBatchBytes when it is zero.
const DefaultMaxBatchBytes = 16 << 20

// maxRun bounds the bytes of one Data message (a run of chunks).
const maxRun = 256 << 10

// Sender replicates one volume to one peer.
type Sender struct {
	mu        sync.Mutex // guards stats, ack and the fields below
	lastAckAt time.Time
	state     string
	lastErr   error // why the sender is retrying or stopped; nil while it works
	rate      rateWindow
	cfg       SenderConfig
	// acked holds, per fixed-size chunk, the XXH64 fingerprint (low bit
	// set; 0: unknown) of the bytes the peer acknowledged: A's side hashes
	// and offers only chunks whose fingerprint moved. Cleared on any
	// failure. 8 bytes per chunk, allocated on first use; volumes of more
	// than maxFingerprinted chunks go without.
	fpMu  sync.Mutex
	acked []uint64
	src   io.ReaderAt // cfg.Source, counted
	read  atomic.Int64
	log   *slog.Logger
	stats Stats
	ack   Ack
	// pt is the consistency point being built (senderpoint.go); only the
	// goroutine running drain and the batches' finishers touch it.
	pt pointState
}

// NewSender checks cfg and returns a Sender.
func NewSender(cfg SenderConfig) (*Sender, error) {
	var errs []error
	if cfg.Volume == "" {
		errs = append(errs, errors.New("no volume"))
	}
	if cfg.Source == nil || cfg.Size == 0 {
		errs = append(errs, errors.New("no source or zero size"))
	}
	if cfg.Log == nil || cfg.Chunker == nil || cfg.Transport == nil {
		errs = append(errs, errors.New("needs a dirty log, a chunker and a transport"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sender for %q: %w", cfg.Volume, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.MaxBatchRead == 0 {
		cfg.MaxBatchRead = 256 << 20
	}
	cfg.MaxBatchRead = max(cfg.MaxBatchRead, cfg.MaxBatchBytes)
	if cfg.Inflight <= 0 {
		cfg.Inflight = 2
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.MaxCaptureBytes == 0 {
		cfg.MaxCaptureBytes = 64 << 20
	}
	if cfg.MaxPause == 0 {
		cfg.MaxPause = 2 * time.Second
	}
	snd := &Sender{cfg: cfg, state: "starting", log: cfg.Logger.With("volume", cfg.Volume, "peer", cfg.Peer)}
	snd.src = countingReader{r: cfg.Source, n: &snd.read}
	snd.pt.init()
	return snd, nil
}

// Stats returns the counters so far.
func (s *Sender) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// count updates the counters under the lock (batches finish concurrently).
func (s *Sender) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// LastAck returns the last acknowledgement received.
func (s *Sender) LastAck() Ack {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ack
}

// batch is a read and chunked set of regions, ready to offer.
type batch struct {
	last    bool // last batch of the pass: ask for the root
	regions []logd.PendingRegion
	offer   Offer
	data    [][]byte          // per range: the bytes that were hashed
	fps     map[uint64]uint64 // offered chunk offset -> XXH64 (fixed chunker)
	// releases hand the read buffers data points into back to the
	// chunker, once the batch is acknowledged.
	releases []func()
}

// free drops the batch's bytes: data must not be read after. Only an
// acknowledged batch hands its read buffers back for reuse. The transport
// may still be writing the bytes of a batch given up (a stream that failed
// or was abandoned goes on draining in gRPC's writer after Close), so those
// buffers are left to the garbage collector rather than read into again.
func (b *batch) free(acked bool) {
	if acked {
		for _, r := range b.releases {
			r()
		}
	}
	b.releases, b.data = nil, nil
}

// Run replicates until ctx is done: whenever the volume has pending regions
// it sends them, then waits for the dirty log to report changes. Failed
// passes are retried with the one Backoff policy for as long as it takes.
// Run returns only ctx's error, a permanent error (Permanent) or an
// ErrSource error: the caller must reopen the volume.
func (s *Sender) Run(ctx context.Context) error {
	changes := s.cfg.Log.Changes(ctx)
	tick := time.NewTicker(time.Second) // regions skipped as busy become quiet
	defer tick.Stop()
	for {
		if err := s.drain(ctx, 0); err != nil {
			return err
		}
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case u, ok := <-changes:
				if !ok {
					return ctx.Err()
				}
				waiting = u != s.cfg.Volume
			case <-tick.C:
				waiting = false
			}
		}
	}
}

// RunOnce sends every pending, quiet region of the volume, retrying failed
// passes with backoff (at most MaxAttempts in a row without progress, if
// set), and returns when none is left that can be sent now (regions with a
// write in flight are left for the next call).
func (s *Sender) RunOnce(ctx context.Context) (Stats, error) {
	err := s.drain(ctx, s.cfg.MaxAttempts)
	return s.Stats(), err
}

// drain runs passes until one finds nothing more to send, retrying failed
// ones with backoff; maxAttempts > 0 bounds consecutive failures without
// progress.
func (s *Sender) drain(ctx context.Context, maxAttempts int) error {
	s.beginRate()
	defer s.endRate()
	bo := Backoff{Min: s.cfg.MinBackoff, Max: s.cfg.MaxBackoff}
	attempts := 0
	for {
		progressed, more, err := s.pass(ctx)
		if err == nil && !more {
			// Everything sendable was sent: make a consistency point
			// of it, when one is due.
			made, perr := s.maybePoint(ctx)
			if perr == nil {
				if made {
					progressed = true
				}
				s.count(func(st *Stats) { st.Passes++ })
				s.setState("idle")
				return nil
			}
			err = perr
		}
		if err == nil {
			// More is pending (a writer keeps dirtying regions): a point
			// is made as soon as what is left fits in one freeze, or the
			// replica would never get one while writes go on.
			if _, perr := s.maybePoint(ctx); perr == nil {
				continue
			} else {
				err = perr
			}
		}
		if errors.Is(err, ErrStaged) && !s.pt.staged() {
			// The peer holds a point: from now on batches are staged.
			s.log.Info("the peer holds a consistency point; staging batches from now on")
			s.pt.setStaged()
			continue
		}
		s.count(func(st *Stats) { st.Failures++ })
		s.forgetAcked()
		if !errors.Is(err, errFreezeExpired) {
			s.pt.abandon()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if Permanent(err) || errors.Is(err, ErrSource) {
			s.setFailure("stopped: "+err.Error(), err)
			return err
		}
		if progressed {
			attempts = 0
			bo.Reset()
		}
		attempts++
		if maxAttempts > 0 && attempts >= maxAttempts {
			return fmt.Errorf("giving up after %d attempts: %w", attempts, err)
		}
		wait := bo.Next()
		s.setFailure(fmt.Sprintf("retrying in %v: %v", wait.Round(time.Millisecond), err), err)
		s.log.Info("batch failed; retrying", "err", err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// pass takes one snapshot of the pending set and sends it in batches,
// reading the next batch while the current one is in flight. It reports
// whether any batch was acknowledged and whether a new pass may find more.
func (s *Sender) pass(ctx context.Context) (progressed, more bool, err error) {
	pending, err := s.cfg.Log.Pending(s.cfg.Volume)
	if err != nil {
		return false, false, fmt.Errorf("pending regions: %w", err)
	}
	// Regions staged for the point being built, and not written since,
	// need not be sent again.
	pending = s.pt.unsent(pending)
	if len(pending) == 0 {
		return false, false, nil
	}
	progressed, sent, err := s.sendRegions(ctx, pending, s.src, true)
	if err != nil || sent == 0 {
		return progressed, err != nil, err
	}
	// Regions requeued (written during their read) make another pass useful.
	return progressed, s.requeuedLastPass(), nil
}

// sendRegions sends pending regions of src in batches, reading the next
// batch while the current one is in flight; live says src is the volume
// itself (so a region with a write in flight is skipped), not a capture.
// It reports whether any batch was acknowledged and how many were sent.
func (s *Sender) sendRegions(ctx context.Context, pending []logd.PendingRegion, src io.ReaderAt, live bool) (progressed bool, sent int, err error) {
	s.setState("sending")
	regionSize, _, err := s.cfg.Log.RegionSize(s.cfg.Volume)
	if err != nil {
		return false, 0, fmt.Errorf("region size: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type built struct {
		b   *batch
		err error
	}
	ch := make(chan built, 1) // one batch read ahead
	go func() {
		defer close(ch)
		put := func(bt built) bool {
			select {
			case ch <- bt:
				return true
			case <-ctx.Done():
				return false
			}
		}
		// Hold each batch until the next one exists, so the last one of
		// the pass is known (it asks for the root).
		var prev *batch
		rest := pending
		for len(rest) > 0 {
			b, n, err := s.build(rest, regionSize, src, live)
			rest = rest[n:]
			if err != nil {
				put(built{err: err})
				return
			}
			if b == nil {
				continue
			}
			if prev != nil && !put(built{b: prev}) {
				return
			}
			prev = b
		}
		if prev != nil {
			prev.last = true
			put(built{b: prev})
		}
	}()
	// On return, stop the reader and wait for it: it updates s.stats.
	defer func() {
		cancel()
		for range ch {
		}
	}()
	// Up to Inflight batches are in flight: the next batch streams while
	// earlier ones wait for their acks. The last batch of the pass, which
	// asks for the root, finishes only after all earlier ones acked.
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
		prev     []chan struct{}
		sem      = make(chan struct{}, s.cfg.Inflight)
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		cancel()
	}
	failed := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr
	}
	for bt := range ch {
		if bt.err != nil {
			fail(bt.err)
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if failed() != nil || ctx.Err() != nil {
			break
		}
		finish, abandon, err := s.send(ctx, bt.b)
		if err != nil {
			<-sem
			fail(err)
			break
		}
		sent++
		done := make(chan struct{})
		var wait []chan struct{}
		if bt.b.last {
			wait = prev
		}
		prev = append(prev, done)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			defer func() { <-sem }()
			acked := false
			defer func() { bt.b.free(acked) }() // acked or given up: its bytes are not read again
			for _, w := range wait {
				<-w
			}
			if failed() != nil {
				abandon() // an earlier batch failed: this one is not acked
				return
			}
			if err := finish(); err != nil {
				fail(err)
				return
			}
			acked = true
			errMu.Lock()
			progressed = true
			errMu.Unlock()
		}()
	}
	wg.Wait()
	if err := failed(); err != nil {
		return progressed, sent, err
	}
	if err := ctx.Err(); err != nil {
		return progressed, sent, err
	}
	return progressed, sent, nil
}

func (s *Sender) requeuedLastPass() bool {
	pending, err := s.cfg.Log.Pending(s.cfg.Volume)
	if err != nil {
		return true
	}
	for _, p := range pending {
		if q, err := s.cfg.Log.Quiet(s.cfg.Volume, p.Region); err == nil && q {
			return true
		}
	}
	return false
}

// build picks quiet regions from the head of rest and reads and chunks
// each run of consecutive regions, until the batch offers MaxBatchBytes or
// covers MaxBatchRead: after scattered writes most of what is read is as
// the peer acknowledged it, and a batch that carries a few changed chunks
// per MiB read would cost a round trip and the peer's syncs per handful of
// blocks. It returns how many entries of rest it consumed.
func (s *Sender) build(rest []logd.PendingRegion, regionSize uint64, src io.ReaderAt, live bool) (*batch, int, error) {
	b := &batch{offer: Offer{Volume: s.cfg.Volume, VolumeSize: s.cfg.Size, Params: s.cfg.Chunker.Params(), Point: s.pt.offerToken()}, fps: map[uint64]uint64{}}
	var (
		run      struct{ start, end uint64 } // regions picked, not cut yet
		offered  uint64                      // bytes the batch offers so far
		covered  uint64                      // bytes of the volume it covers
		n        int
		fixed, _ = s.cfg.Chunker.(FixedChunker)
	)
	_, byFingerprint := s.cfg.Chunker.(FixedChunker)
	// cut reads and chunks the run picked so far and adds what changed to
	// the batch.
	cut := func() error {
		if run.end == run.start {
			return nil
		}
		defer func() { run.start, run.end = 0, 0 }()
		if byFingerprint {
			// Only chunks whose fingerprint moved since the peer's last
			// ack are hashed and offered.
			rgs, data, fps, read, release, err := fixed.CutChanged(src, s.cfg.Size, run.start, run.end, s.changedSinceAck)
			if err != nil {
				return fmt.Errorf("%w: [%d,%d): %w", ErrSource, run.start, run.end, err)
			}
			if release != nil {
				b.releases = append(b.releases, release)
			}
			chunks := 0
			for k, rg := range rgs {
				for i, c := range rg.Chunks {
					b.fps[c.Offset] = fps[k][i]
					if c.Length > blockhash.BlockSize && c.Blocks == nil {
						rg.Chunks[i].Blocks = blockhash.BlockFingerprints(c.Offset, data[k][c.Offset-rg.Start:c.End()-rg.Start])
					}
				}
				chunks += len(rg.Chunks)
				offered += rg.End - rg.Start
				b.add(rg, data[k])
			}
			total := int((read + uint64(fixed.Size) - 1) / uint64(fixed.Size))
			s.count(func(st *Stats) { st.ChunksUnchanged += total - chunks })
			return nil
		}
		rg, data, err := s.cfg.Chunker.Cut(src, s.cfg.Size, run.start, run.end)
		if err != nil {
			return fmt.Errorf("%w: [%d,%d): %w", ErrSource, run.start, run.end, err)
		}
		for i, c := range rg.Chunks {
			if c.Length > blockhash.BlockSize {
				rg.Chunks[i].Blocks = blockhash.BlockFingerprints(c.Offset, data[c.Offset-rg.Start:c.End()-rg.Start])
			}
		}
		offered += rg.End - rg.Start
		b.add(rg, data)
		return nil
	}
	for ; n < len(rest) && offered < s.cfg.MaxBatchBytes && covered < s.cfg.MaxBatchRead; n++ {
		p := rest[n]
		start := p.Region * regionSize
		if start >= s.cfg.Size {
			// Past the device's end (the log rounds up): nothing to send.
			if _, err := s.cfg.Log.Replicated(s.cfg.Volume, []logd.PendingRegion{p}); err != nil {
				return nil, n, fmt.Errorf("mark region %d replicated: %w", p.Region, err)
			}
			continue
		}
		end := min(start+regionSize, s.cfg.Size)
		// The generation was recorded (by Pending) before this check and
		// before the read: a MARK from here on makes Replicated refuse.
		quiet := true
		if live {
			var err error
			if quiet, err = s.cfg.Log.Quiet(s.cfg.Volume, p.Region); err != nil {
				return nil, n, fmt.Errorf("quiet region %d: %w", p.Region, err)
			}
		}
		if !quiet {
			s.count(func(st *Stats) { st.SkippedBusy++ })
			continue
		}
		if run.end != start {
			if err := cut(); err != nil {
				return nil, n, err
			}
			run.start = start
		}
		run.end = end
		b.regions = append(b.regions, p)
		covered += end - start
		// A run is cut once it could fill what the batch has left to
		// offer: what one read holds stays within MaxBatchBytes.
		if run.end-run.start >= s.cfg.MaxBatchBytes-offered {
			if err := cut(); err != nil {
				return nil, n, err
			}
		}
	}
	if err := cut(); err != nil {
		return nil, n, err
	}
	s.count(func(st *Stats) { st.BytesRead = uint64(s.read.Load()) })
	if len(b.regions) == 0 {
		return nil, n, nil
	}
	if len(b.offer.Ranges) == 0 {
		// Every chunk is as the peer acknowledged it: nothing to send.
		if b.offer.Point != 0 {
			s.pt.record(b.offer.Point, b.regions, false) // part of the point as it is
			return nil, n, nil
		}
		m, err := s.cfg.Log.Replicated(s.cfg.Volume, b.regions)
		if err != nil {
			return nil, n, fmt.Errorf("mark %d unchanged regions replicated: %w", len(b.regions), err)
		}
		s.count(func(st *Stats) {
			st.Replicated += m
			st.Requeued += len(b.regions) - m
		})
		return nil, n, nil
	}
	return b, n, nil
}

// add appends a cut range and its bytes to the batch's offer, trimming
// chunks already offered and joining it to an adjacent range.
func (b *batch) add(rg Range, data []byte) {
	if k := len(b.offer.Ranges) - 1; k >= 0 && b.offer.Ranges[k].End > rg.Start {
		// A chunk reached into this run: trim what is already offered.
		rg, data = trimFront(rg, data, b.offer.Ranges[k].End)
		if len(rg.Chunks) == 0 {
			return
		}
	}
	if k := len(b.offer.Ranges) - 1; k >= 0 && b.offer.Ranges[k].End == rg.Start {
		b.offer.Ranges[k].End = rg.End
		b.offer.Ranges[k].Chunks = append(b.offer.Ranges[k].Chunks, rg.Chunks...)
		b.data[k] = append(b.data[k], data...)
		return
	}
	b.offer.Ranges = append(b.offer.Ranges, rg)
	b.data = append(b.data, data)
}

// maxFingerprinted bounds the chunks whose fingerprints a sender keeps
// (128 MiB of memory: a 64 GiB volume in 4 KiB chunks).
const maxFingerprinted = 1 << 24

// changedSinceAck reports whether the chunk at off has a fingerprint other
// than the one the peer last acknowledged (or none is known).
func (s *Sender) changedSinceAck(off, fp uint64) bool {
	s.fpMu.Lock()
	defer s.fpMu.Unlock()
	i := off / uint64(s.fixedSize())
	return i >= uint64(len(s.acked)) || s.acked[i] != fp|1
}

// rememberAcked records the fingerprints of chunks the peer acknowledged.
func (s *Sender) rememberAcked(fps map[uint64]uint64) {
	cs := uint64(s.fixedSize())
	n := (s.cfg.Size + cs - 1) / cs
	if len(fps) == 0 || n > maxFingerprinted {
		return
	}
	s.fpMu.Lock()
	defer s.fpMu.Unlock()
	if s.acked == nil {
		s.acked = make([]uint64, n)
	}
	for off, fp := range fps {
		s.acked[off/cs] = fp | 1
	}
}

func (s *Sender) fixedSize() uint32 {
	if f, ok := s.cfg.Chunker.(FixedChunker); ok && f.Size > 0 {
		return f.Size
	}
	return 1
}

// forgetAcked drops every remembered fingerprint: after a failure the
// peer's bytes are not known, so the next pass offers every chunk and the
// peer's own index decides.
func (s *Sender) forgetAcked() {
	s.fpMu.Lock()
	clear(s.acked)
	s.fpMu.Unlock()
}

// ForgetAcked drops what the sender remembers of the peer's acknowledged
// chunks, so that its next passes offer every pending chunk and the peer's
// own index decides what to send: for a resync, after the peer's replica
// was reset (its image changed) or damaged.
func (s *Sender) ForgetAcked() { s.forgetAcked() }

// countingReader counts the bytes read from the source.
type countingReader struct {
	r io.ReaderAt
	n *atomic.Int64
}

func (c countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// trimFront drops the chunks of rg that start before pos.
func trimFront(rg Range, data []byte, pos uint64) (Range, []byte) {
	i := 0
	for i < len(rg.Chunks) && rg.Chunks[i].Offset < pos {
		i++
	}
	if i == len(rg.Chunks) {
		return Range{Start: rg.End, End: rg.End}, nil
	}
	start := rg.Chunks[i].Offset
	return Range{Start: start, End: rg.End, Chunks: rg.Chunks[i:]}, data[start-rg.Start:]
}

// send streams one batch: offer, then every needed byte without waiting.
// It returns the second half, finish, which waits for the receiver's
// durable ack and only then marks the batch's regions replicated; finish
// may run while the next batch streams.
// If finish is not to be called, abandon closes the stream instead.
func (s *Sender) send(ctx context.Context, b *batch) (finish func() error, abandon func(), err error) {
	st, err := s.cfg.Transport.Apply(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	need, err := st.Offer(&b.offer)
	if err != nil {
		return nil, nil, err
	}
	if len(need.Missing) != b.offer.NumChunks() {
		return nil, nil, fmt.Errorf("receiver answered for %d of %d chunks: %w", len(need.Missing), b.offer.NumChunks(), ErrProtocol)
	}
	s.count(func(st *Stats) { st.ChunksOffered += len(need.Missing) })
	s.count(func(st *Stats) { st.ChunksCopied += need.Copied })
	s.count(func(st *Stats) { st.ChunksPresent += need.Present })
	// Needed chunks go out in runs of consecutive chunks, up to maxRun
	// bytes per message, without waiting for anything; chunks asked for by
	// blocks go alone, with just those blocks.
	var sentBytes uint64
	sendWhole := func(want func(i int) bool) error {
		i := 0
		for k, rg := range b.offer.Ranges {
			runStart, runFirst, runLen := uint64(0), -1, uint64(0)
			flush := func() error {
				if runFirst < 0 {
					return nil
				}
				d := b.data[k][runStart-rg.Start : runStart-rg.Start+runLen]
				if err := st.Send(uint32(runFirst), d); err != nil {
					return err
				}
				sentBytes += runLen
				s.count(func(st *Stats) { st.BytesSent += runLen })
				runFirst, runLen = -1, 0
				return nil
			}
			for _, c := range rg.Chunks {
				w := want(i)
				if !w || runLen+uint64(c.Length) > maxRun {
					if err := flush(); err != nil {
						return err
					}
				}
				if w {
					if runFirst < 0 {
						runFirst, runStart = i, c.Offset
					}
					runLen += uint64(c.Length)
					s.count(func(st *Stats) { st.ChunksSent++ })
				}
				i++
			}
			if err := flush(); err != nil {
				return err
			}
		}
		return nil
	}
	if err := sendWhole(func(i int) bool { return need.Missing[i] && need.Blocks[i] == nil }); err != nil {
		return nil, nil, err
	}
	if len(need.Blocks) > 0 {
		i := 0
		for k, rg := range b.offer.Ranges {
			for _, c := range rg.Chunks {
				if mask := need.Blocks[i]; mask != nil {
					var d []byte
					bc := blockhash.Chunk{Offset: c.Offset, Length: uint64(c.Length)}
					for j, w := range mask {
						if w {
							lo, hi := blockhash.BlockRange(bc, j)
							d = append(d, b.data[k][lo-rg.Start:hi-rg.Start]...)
						}
					}
					if err := st.SendBlocks(uint32(i), d); err != nil {
						return nil, nil, err
					}
					sentBytes += uint64(len(d))
					s.count(func(st *Stats) { st.BytesSent += uint64(len(d)) })
					s.count(func(st *Stats) { st.ChunksPatched++ })
				}
				i++
			}
		}
	}
	return func() error {
		defer st.Close()
		// A staged batch's root would describe the last point, not this
		// batch: the point's commit reports the root.
		wantRoot := b.last && b.offer.Point == 0
		ack, resend, err := st.Finish(wantRoot)
		if err != nil {
			return err
		}
		if len(resend) > 0 {
			s.log.Info("receiver could not patch chunks from blocks; sending them whole", "chunks", len(resend))
			s.count(func(st *Stats) { st.ChunksResent += len(resend) })
			set := map[int]bool{}
			for _, i := range resend {
				set[i] = true
			}
			if err := sendWhole(func(i int) bool { return set[i] }); err != nil {
				return err
			}
			if ack, resend, err = st.Finish(wantRoot); err != nil {
				return err
			}
			if len(resend) > 0 {
				return fmt.Errorf("receiver asked a second time for %d chunks: %w", len(resend), ErrProtocol)
			}
		}
		s.rememberAcked(b.fps)
		s.mu.Lock()
		s.lastAckAt = time.Now()
		if ack.HasRoot {
			s.ack = ack
		}
		s.mu.Unlock()
		s.count(func(st *Stats) { st.Batches++ })
		if b.offer.Point != 0 {
			// Staged: the regions count as replicated once the point
			// is committed.
			s.pt.record(b.offer.Point, b.regions, true)
		} else {
			n, err := s.cfg.Log.Replicated(s.cfg.Volume, b.regions)
			if err != nil {
				return fmt.Errorf("mark %d regions replicated: %w", len(b.regions), err)
			}
			s.count(func(st *Stats) {
				st.Replicated += n
				st.Requeued += len(b.regions) - n
			})
			s.pt.sentInPlace()
		}
		defer s.progress()
		if s.cfg.Store != nil {
			p, _, err := s.cfg.Store.Progress(s.cfg.Volume, s.cfg.Peer)
			if err != nil {
				return err
			}
			if ack.HasRoot {
				p.Root, p.Chunks = ack.Root, ack.Chunks
			}
			p.AckedAt = time.Now().UnixNano()
			p.Batches++
			p.BytesSent += sentBytes
			if err := s.cfg.Store.SetProgress(s.cfg.Volume, s.cfg.Peer, p); err != nil {
				return err
			}
		}
		return nil
	}, st.Close, nil
}
