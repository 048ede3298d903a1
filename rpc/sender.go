package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	// MaxBatchBytes bounds the bytes read into one batch (default 16 MiB).
	MaxBatchBytes uint64
	// MinBackoff and MaxBackoff bound the wait between retries (defaults
	// 100 ms and 10 s); the wait doubles per failure, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts bounds consecutive failed batches in one RunOnce before
	// it gives up (0: retry until ctx is done).
	MaxAttempts int
	// Inflight is how many batches may await their acks at once
	// (default 2).
	Inflight int
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
}

// maxRun bounds the bytes of one Data message (a run of chunks).
const maxRun = 256 << 10

// Sender replicates one volume to one peer.
type Sender struct {
	mu          sync.Mutex // guards stats, ack and the fields below
	lastAckAt   time.Time
	runStarted  time.Time
	readAtStart uint64
	cfg         SenderConfig
	src         io.ReaderAt // cfg.Source, counted
	read        atomic.Int64
	log         *slog.Logger
	stats       Stats
	ack         Ack
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
		cfg.MaxBatchBytes = 16 << 20
	}
	if cfg.Inflight <= 0 {
		cfg.Inflight = 2
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	snd := &Sender{cfg: cfg, log: cfg.Logger.With("volume", cfg.Volume, "peer", cfg.Peer)}
	snd.src = countingReader{r: cfg.Source, n: &snd.read}
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
	data    [][]byte // per range: the bytes that were hashed
}

// Run replicates until ctx is done: whenever the volume has pending regions
// it sends them, then waits for the dirty log to report changes. It returns
// only ctx's error or a permanent error.
func (s *Sender) Run(ctx context.Context) error {
	changes := s.cfg.Log.Changes(ctx)
	for {
		if _, err := s.RunOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if Permanent(err) {
				return err
			}
			s.log.Warn("replication pass failed", "err", err)
		}
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case u, ok := <-changes:
				if !ok {
					return ctx.Err()
				}
				if u != s.cfg.Volume {
					continue
				}
			case <-time.After(time.Second): // regions skipped as busy become quiet
			}
			break
		}
	}
}

// RunOnce sends every pending, quiet region of the volume, retrying failed
// batches with backoff, and returns when none is left that can be sent now
// (regions with a write in flight are left for the next pass).
func (s *Sender) RunOnce(ctx context.Context) (Stats, error) {
	s.mu.Lock()
	s.runStarted, s.readAtStart = time.Now(), uint64(s.read.Load())
	s.mu.Unlock()
	attempts := 0
	backoff := s.cfg.MinBackoff
	for {
		progressed, more, err := s.pass(ctx)
		if err == nil && !more {
			return s.Stats(), nil
		}
		if err == nil {
			continue
		}
		s.count(func(st *Stats) { st.Failures++ })
		if Permanent(err) || ctx.Err() != nil {
			return s.Stats(), err
		}
		if progressed {
			attempts, backoff = 0, s.cfg.MinBackoff
		}
		attempts++
		if s.cfg.MaxAttempts > 0 && attempts >= s.cfg.MaxAttempts {
			return s.Stats(), fmt.Errorf("giving up after %d attempts: %w", attempts, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.log.Info("batch failed; retrying", "err", err, "wait", wait)
		select {
		case <-ctx.Done():
			return s.Stats(), ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
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
	if len(pending) == 0 {
		return false, false, nil
	}
	regionSize, _, err := s.cfg.Log.RegionSize(s.cfg.Volume)
	if err != nil {
		return false, false, fmt.Errorf("region size: %w", err)
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
			b, n, err := s.build(rest, regionSize)
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
	sent := 0
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
		finish, err := s.send(ctx, bt.b)
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
			for _, w := range wait {
				<-w
			}
			if failed() != nil {
				return
			}
			if err := finish(); err != nil {
				fail(err)
				return
			}
			errMu.Lock()
			progressed = true
			errMu.Unlock()
		}()
	}
	wg.Wait()
	if err := failed(); err != nil {
		return progressed, true, err
	}
	if err := ctx.Err(); err != nil {
		return progressed, true, err
	}
	// Regions requeued (written during their read) make another pass useful.
	return progressed, sent > 0 && s.requeuedLastPass(), nil
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

// build picks quiet regions from the head of rest until the batch is full,
// then reads and chunks each run of consecutive regions with one Cut. It
// returns how many entries of rest it consumed.
func (s *Sender) build(rest []logd.PendingRegion, regionSize uint64) (*batch, int, error) {
	b := &batch{offer: Offer{Volume: s.cfg.Volume, VolumeSize: s.cfg.Size, Params: s.cfg.Chunker.Params()}}
	type run struct{ start, end uint64 }
	var runs []run
	var bytes uint64
	n := 0
	for ; n < len(rest) && bytes < s.cfg.MaxBatchBytes; n++ {
		p := rest[n]
		start := p.Region * regionSize
		if start >= s.cfg.Size {
			// Past the device's end (the log rounds up): nothing to send.
			if _, err := s.cfg.Log.Replicated(s.cfg.Volume, p.Region, p.Gen); err != nil {
				return nil, n, fmt.Errorf("mark region %d replicated: %w", p.Region, err)
			}
			continue
		}
		end := min(start+regionSize, s.cfg.Size)
		// The generation was recorded (by Pending) before this check and
		// before the read: a MARK from here on makes Replicated refuse.
		quiet, err := s.cfg.Log.Quiet(s.cfg.Volume, p.Region)
		if err != nil {
			return nil, n, fmt.Errorf("quiet region %d: %w", p.Region, err)
		}
		if !quiet {
			s.count(func(st *Stats) { st.SkippedBusy++ })
			continue
		}
		b.regions = append(b.regions, p)
		bytes += end - start
		if k := len(runs) - 1; k >= 0 && runs[k].end == start {
			runs[k].end = end
		} else {
			runs = append(runs, run{start, end})
		}
	}
	for _, ru := range runs {
		rg, data, err := s.cfg.Chunker.Cut(s.src, s.cfg.Size, ru.start, ru.end)
		if err != nil {
			return nil, n, fmt.Errorf("read [%d,%d): %w", ru.start, ru.end, err)
		}
		for i, c := range rg.Chunks {
			if c.Length > blockhash.BlockSize {
				rg.Chunks[i].Blocks = blockhash.BlockFingerprints(c.Offset, data[c.Offset-rg.Start:c.End()-rg.Start])
			}
		}
		if k := len(b.offer.Ranges) - 1; k >= 0 && b.offer.Ranges[k].End > rg.Start {
			// A chunk reached into this run: trim what is already offered.
			rg, data = trimFront(rg, data, b.offer.Ranges[k].End)
			if len(rg.Chunks) == 0 {
				continue
			}
		}
		if k := len(b.offer.Ranges) - 1; k >= 0 && b.offer.Ranges[k].End == rg.Start {
			b.offer.Ranges[k].End = rg.End
			b.offer.Ranges[k].Chunks = append(b.offer.Ranges[k].Chunks, rg.Chunks...)
			b.data[k] = append(b.data[k], data...)
			continue
		}
		b.offer.Ranges = append(b.offer.Ranges, rg)
		b.data = append(b.data, data)
	}
	s.count(func(st *Stats) { st.BytesRead = uint64(s.read.Load()) })
	if len(b.regions) == 0 {
		return nil, n, nil
	}
	return b, n, nil
}

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
func (s *Sender) send(ctx context.Context, b *batch) (finish func() error, err error) {
	st, err := s.cfg.Transport.Apply(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	need, err := st.Offer(&b.offer)
	if err != nil {
		return nil, err
	}
	if len(need.Missing) != b.offer.NumChunks() {
		return nil, fmt.Errorf("receiver answered for %d of %d chunks: %w", len(need.Missing), b.offer.NumChunks(), ErrProtocol)
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
		return nil, err
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
						return nil, err
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
		ack, resend, err := st.Finish(b.last)
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
			if ack, resend, err = st.Finish(b.last); err != nil {
				return err
			}
			if len(resend) > 0 {
				return fmt.Errorf("receiver asked a second time for %d chunks: %w", len(resend), ErrProtocol)
			}
		}
		s.mu.Lock()
		s.lastAckAt = time.Now()
		if ack.HasRoot {
			s.ack = ack
		}
		s.mu.Unlock()
		s.count(func(st *Stats) { st.Batches++ })
		for _, p := range b.regions {
			ok, err := s.cfg.Log.Replicated(s.cfg.Volume, p.Region, p.Gen)
			if err != nil {
				return fmt.Errorf("mark region %d replicated: %w", p.Region, err)
			}
			if ok {
				s.count(func(st *Stats) { st.Replicated++ })
			} else {
				s.count(func(st *Stats) { st.Requeued++ })
			}
		}
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
	}, nil
}

// VerifyResult compares the source with the peer's replica.
type VerifyResult struct {
	Source, Replica RootInfo
	Equal           bool
	// Differ lists the byte ranges where the replica's chunks differ from
	// the source's, found by descending both Merkle trees.
	Differ []blockhash.Range
	Diff   blockhash.DiffStats
}

// Verify reads the whole source, chunks it from scratch, compares its roots
// with the peer's and, if they differ, lists the differing byte ranges by
// descending both Merkle trees (the peer's node by node over the wire).
func (s *Sender) Verify(ctx context.Context) (VerifyResult, error) {
	chunks, err := SourceChunks(s.cfg.Chunker, s.cfg.Source, s.cfg.Size)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify %s: %w", s.cfg.Volume, err)
	}
	h := NewRootHasher(s.cfg.Size)
	list := make([]blockhash.Chunk, len(chunks))
	for i, c := range chunks {
		h.Add(c)
		list[i] = blockhash.Chunk{Offset: c.Offset, Length: uint64(c.Length), ID: c.ID}
	}
	root, n := h.Sum()
	tree := blockhash.NewTree(list)
	src := RootInfo{Root: root, Chunks: n, VolumeSize: s.cfg.Size, MerkleRoot: tree.Root()}
	peer, err := s.cfg.Transport.Root(ctx, s.cfg.Volume)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify %s: %w", s.cfg.Volume, err)
	}
	res := VerifyResult{Source: src, Replica: peer, Equal: peer.Root == root && !peer.Applying}
	if peer.Root != root {
		res.Differ, res.Diff, err = tree.Diff(s.cfg.Transport.Tree(ctx, s.cfg.Volume))
		if err != nil {
			return res, fmt.Errorf("verify %s: diff trees: %w", s.cfg.Volume, err)
		}
	}
	return res, nil
}
