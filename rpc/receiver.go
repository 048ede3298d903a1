package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/pebble"
)

// Image is a replica's storage: a file or a block device.
type Image interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// ReceiveVolume is one replica a receiver keeps.
type ReceiveVolume struct {
	// Name is the volume's name (the source's UUID).
	Name string
	// Image holds the replica; it must be at least Size bytes.
	Image Image
	// Size is the volume size in bytes; offers for another size are refused.
	Size uint64
	// Params are the chunk parameters the replica accepts. Zero means
	// "adopt those of the first offer", remembered durably after its commit.
	Params ChunkParams
	// Senders lists the node ids allowed to send this volume.
	Senders []string
}

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	Store   *pebble.ReplicaStore
	Log     *slog.Logger
	Volumes []ReceiveVolume
	// MaxBatchBytes bounds the bytes one offer may cover (default 256 MiB).
	MaxBatchBytes uint64
	// MaxChunks bounds the chunks in one offer (default 1<<18).
	MaxChunks int
	// StagingDir holds the redo files of consistency points being staged
	// (point.go); without it the receiver refuses staged batches.
	StagingDir string
	// MaxScrubRate bounds the bytes per second this receiver reads from
	// its images for scrubs, all peers and scrubs together; a request for
	// more gets this (default DefaultScrubRate).
	MaxScrubRate uint64
}

// Receiver applies batches from senders to replicas. It holds no transport:
// a transport calls Begin, then Put for each chunk, then Commit or Abort.
type Receiver struct {
	cfg   ReceiverConfig
	log   *slog.Logger
	vols  map[string]*recvVolume
	seq   atomic.Uint64
	known map[string]bool
	// Bytes written: to images in place, to staging files, and to
	// images from staging files when points were applied.
	inPlace, staged, applied atomic.Uint64
	// scrubCap paces the scrubs of all peers together (MaxScrubRate).
	scrubCap waiter
}

// ReceiverStats counts the bytes a receiver wrote.
type ReceiverStats struct {
	// InPlace is written straight into images (before a replica's first
	// point); Staged into staging files (redo records, with their 16-byte
	// headers); Applied from staging files into images.
	InPlace, Staged, Applied uint64
}

// Stats returns the receiver's counters.
func (r *Receiver) Stats() ReceiverStats {
	return ReceiverStats{InPlace: r.inPlace.Load(), Staged: r.staged.Load(), Applied: r.applied.Load()}
}

type recvVolume struct {
	ReceiveVolume
	// Batches of one volume run concurrently on disjoint byte ranges.
	imu      sync.Mutex
	inflight map[uint64][]pebble.ByteRange // batch id -> its ranges
	released chan struct{}                 // closed when a batch ends
	senders  map[string]bool
	mu       sync.Mutex // guards params, stored, hasPoint and point
	params   ChunkParams
	stored   bool // the store holds the volume's meta
	hasPoint bool // the replica holds a consistency point: no batch is written in place
	point    RecoveryPoint
	// pmu guards the point being staged (point.go).
	pmu    sync.Mutex
	token  uint64             // the point being staged; 0: none
	staged []pebble.ByteRange // ranges its batches staged so far
	// syncMu serializes the image's fsyncs; syncErr is the first that
	// failed. Linux reports a writeback error once, so after one failure
	// no batch of the image is acknowledged until the receiver is rebuilt.
	syncMu  sync.Mutex
	syncErr error
	// tree is the Merkle tree over the index; every index change below
	// is followed by tree.changed.
	tree indexTree
	// ids filters the by-id lookups of plan; every index write below is
	// followed by ids.add.
	ids idFilter
}

// NewReceiver validates cfg and recovers every volume: index entries of
// batches that were half applied when the process stopped are dropped (the
// markers stay until a batch covering them commits).
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	if cfg.Store == nil {
		return nil, errors.New("receiver: no store")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = 256 << 20
	}
	if cfg.MaxChunks == 0 {
		cfg.MaxChunks = 1 << 18
	}
	if cfg.MaxScrubRate == 0 {
		cfg.MaxScrubRate = DefaultScrubRate
	}
	if cfg.MaxScrubRate < MinScrubRate {
		return nil, fmt.Errorf("receiver: scrub rate cap of %d bytes/s is below the least a scrub may ask for (%d)", cfg.MaxScrubRate, MinScrubRate)
	}
	r := &Receiver{cfg: cfg, log: cfg.Log, vols: map[string]*recvVolume{}, known: map[string]bool{},
		scrubCap: newScrubPacer(cfg.MaxScrubRate, MaxScrubPiece)}
	r.seq.Store(uint64(time.Now().UnixNano()))
	var errs []error
	for _, v := range cfg.Volumes {
		if _, dup := r.vols[v.Name]; dup {
			errs = append(errs, fmt.Errorf("volume %q configured twice", v.Name))
			continue
		}
		if v.Image == nil || v.Size == 0 {
			errs = append(errs, fmt.Errorf("volume %q: needs an image and a size", v.Name))
			continue
		}
		rv := &recvVolume{ReceiveVolume: v, inflight: map[uint64][]pebble.ByteRange{}, released: make(chan struct{}), senders: map[string]bool{}, params: v.Params}
		for _, s := range v.Senders {
			rv.senders[s] = true
			r.known[s] = true
		}
		meta, ok, err := cfg.Store.Meta(v.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rv.stored = ok
		if ok {
			if meta.Size != v.Size {
				errs = append(errs, fmt.Errorf("volume %q: configured size %d but the replica holds %d bytes (%w)", v.Name, v.Size, meta.Size, ErrVolumeMismatch))
			}
			stored := ChunkParams{Algorithm: meta.Algorithm, Min: meta.Min, Avg: meta.Avg, Max: meta.Max}
			if v.Params == (ChunkParams{}) {
				rv.params = stored
			} else if v.Params != stored {
				errs = append(errs, fmt.Errorf("volume %q: configured chunk params %+v but the replica was made with %+v (%w)", v.Name, v.Params, stored, ErrParamsMismatch))
			}
		}
		ms, err := cfg.Store.Applying(v.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, m := range ms {
			r.log.Warn("replica was half applied; dropping its index for the batch's ranges", "volume", v.Name, "batch", m.Batch, "ranges", len(m.Ranges))
			if err := cfg.Store.DropApplied(v.Name, m.Ranges); err != nil {
				errs = append(errs, err)
			}
			rv.tree.changed(m.Ranges)
		}
		if err := r.recoverPoint(rv); err != nil {
			errs = append(errs, err)
			continue
		}
		r.vols[v.Name] = rv
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("receiver config: %w", err)
	}
	return r, nil
}

// MaxOfferBytes bounds the encoded size of any offer the receiver would
// accept (MaxChunks chunks with their block fingerprints, MaxBatchBytes in
// all). A transport refuses larger messages before decoding them, so an
// authorized peer cannot make the receiver decode more than this per
// stream.
func (r *Receiver) MaxOfferBytes() int {
	const perChunk = 64 // offset, length, 32-byte id and their tags, as a message
	const perRange = 32 // start, end and tags
	blocks := r.cfg.MaxBatchBytes/blockhash.BlockSize + uint64(r.cfg.MaxChunks)
	return 4096 + r.cfg.MaxChunks*(perChunk+perRange) + int(blocks)*8
}

// KnownSender reports whether id may send any volume: the TLS handshake
// refuses everyone else.
func (r *Receiver) KnownSender(id string) bool { return r.known[id] }

func (r *Receiver) volume(peer, name string) (*recvVolume, error) {
	v, ok := r.vols[name]
	if !ok {
		return nil, fmt.Errorf("volume %q: %w (configure it on the receiver)", name, ErrUnknownVolume)
	}
	if !v.senders[peer] {
		r.log.Warn("refused sender for volume", "volume", name, "peer", peer)
		return nil, fmt.Errorf("node %s may not send volume %q: %w (add it to the volume's senders)", peer, name, ErrPermission)
	}
	return v, nil
}

// Root reports the replica's root over its chunk list.
func (r *Receiver) Root(peer, name string) (RootInfo, error) {
	v, err := r.volume(peer, name)
	if err != nil {
		return RootInfo{}, err
	}
	return r.root(v)
}

// Tree returns the Merkle tree over the replica's index (holes, the bytes
// not received, are chunks with the zero ID). It is kept up to date in
// memory, not rebuilt per call, and must not be modified.
func (r *Receiver) Tree(peer, name string) (*blockhash.Tree, error) {
	v, err := r.volume(peer, name)
	if err != nil {
		return nil, err
	}
	t, _, _, err := v.tree.current(r.cfg.Store, v.Name, v.Size, r.log)
	return t, err
}

func (r *Receiver) root(v *recvVolume) (RootInfo, error) {
	tree, chunks, covered, err := v.tree.current(r.cfg.Store, v.Name, v.Size, r.log)
	if err != nil {
		return RootInfo{}, err
	}
	ms, err := r.cfg.Store.Applying(v.Name)
	if err != nil {
		return RootInfo{}, err
	}
	v.mu.Lock()
	point := v.point
	v.mu.Unlock()
	// A committed point not yet fully applied leaves the image torn.
	st, _, err := r.cfg.Store.Staging(v.Name)
	if err != nil {
		return RootInfo{}, err
	}
	return RootInfo{Root: tree.Root(), Chunks: chunks, VolumeSize: v.Size, Covered: covered, Applying: len(ms) > 0 || st.Committed, Point: point}, nil
}

// validate checks an offer against the volume before anything is written.
func (r *Receiver) validate(v *recvVolume, o *Offer) error {
	if o.VolumeSize != v.Size {
		return fmt.Errorf("volume %q: offer for %d bytes, replica has %d: %w", v.Name, o.VolumeSize, v.Size, ErrVolumeMismatch)
	}
	v.mu.Lock()
	p := v.params
	v.mu.Unlock()
	if p != (ChunkParams{}) && o.Params != p {
		return fmt.Errorf("volume %q: offer chunked with %v, but the replica was made with %v: %w (send it with the replica's chunking, or give the volume a new replica)", v.Name, o.Params, p, ErrParamsMismatch)
	}
	if o.Params.Max == 0 || o.Params.Algorithm == "" || o.Params.Min > o.Params.Max {
		return fmt.Errorf("volume %q: chunk params %+v: %w", v.Name, o.Params, ErrBadOffer)
	}
	if len(o.Ranges) == 0 {
		return fmt.Errorf("volume %q: offer has no ranges: %w", v.Name, ErrBadOffer)
	}
	var total uint64
	n, prevEnd := 0, uint64(0)
	for i, rg := range o.Ranges {
		if rg.Start >= rg.End || rg.End > v.Size || (i > 0 && rg.Start < prevEnd) {
			return fmt.Errorf("volume %q: range %d [%d,%d) is empty, unsorted or past the end (%d): %w", v.Name, i, rg.Start, rg.End, v.Size, ErrBadOffer)
		}
		prevEnd = rg.End
		total += rg.End - rg.Start
		pos := rg.Start
		for _, c := range rg.Chunks {
			if c.Length == 0 || c.Length > o.Params.Max {
				return fmt.Errorf("volume %q: chunk at %d has length %d, max %d: %w", v.Name, c.Offset, c.Length, o.Params.Max, ErrChunkSize)
			}
			if nb := len(c.Blocks); nb != 0 && uint64(nb) != blockCount(c) {
				return fmt.Errorf("volume %q: chunk at %d has %d block fingerprints, want %d: %w", v.Name, c.Offset, nb, blockCount(c), ErrBadOffer)
			}
			if c.Offset != pos {
				return fmt.Errorf("volume %q: chunk at %d does not tile range [%d,%d) (expected offset %d): %w", v.Name, c.Offset, rg.Start, rg.End, pos, ErrBadOffer)
			}
			pos += uint64(c.Length)
			n++
		}
		if pos != rg.End {
			return fmt.Errorf("volume %q: chunks cover [%d,%d) of range [%d,%d): %w", v.Name, rg.Start, pos, rg.Start, rg.End, ErrBadOffer)
		}
	}
	if total > r.cfg.MaxBatchBytes || n > r.cfg.MaxChunks {
		return fmt.Errorf("volume %q: offer of %d bytes in %d chunks exceeds the limits (%d bytes, %d chunks): %w", v.Name, total, n, r.cfg.MaxBatchBytes, r.cfg.MaxChunks, ErrBadOffer)
	}
	return nil
}

// Batch is one batch being applied. Its methods are not safe for
// concurrent use.
type Batch struct {
	r        *Receiver
	v        *recvVolume
	offer    *Offer
	id       uint64
	chunks   []Chunk
	ranges   []pebble.ByteRange
	missing  []bool
	got      []bool
	dups     map[int][]int  // missing chunk -> later chunks with the same id
	blocks   map[int][]bool // missing chunk -> blocks asked for
	old      map[int][]byte // missing chunk -> its older bytes, read by the plan
	retry    []int          // patched chunks that did not verify
	pending  int
	wrote    bool
	finished bool
	// A staged batch (offer.Point != 0) writes to its redo file instead of
	// the image (point.go).
	redo      *os.File
	redoBytes uint64
	// writes runs the in-place image writes; Commit and Abort wait for
	// them.
	writes writeBehind
}

// Begin validates an offer from peer, durably marks its ranges applying,
// copies the chunks the replica already holds elsewhere, and returns the
// batch and the chunks the sender must send. It waits for any other batch of
// the same volume to finish.
func (r *Receiver) Begin(ctx context.Context, peer string, o *Offer) (*Batch, Need, error) {
	v, err := r.volume(peer, o.Volume)
	if err != nil {
		return nil, Need{}, err
	}
	if err := r.validate(v, o); err != nil {
		r.log.Warn("refused offer", "volume", o.Volume, "peer", peer, "err", err)
		return nil, Need{}, err
	}
	v.syncMu.Lock()
	serr := v.syncErr
	v.syncMu.Unlock()
	if serr != nil {
		return nil, Need{}, fmt.Errorf("volume %q: an earlier fsync of the replica image failed; fix the disk, then restart dmsyncd: %w", v.Name, serr)
	}
	v.mu.Lock()
	hasPoint, seq := v.hasPoint, v.point.Seq
	v.mu.Unlock()
	if o.Point != 0 {
		if err := r.stageBegin(v, o.Point); err != nil {
			return nil, Need{}, err
		}
	} else if hasPoint {
		return nil, Need{}, fmt.Errorf("volume %q holds consistency point %d: %w", v.Name, seq, ErrStaged)
	} else if err := r.dropStaging(v); err != nil {
		return nil, Need{}, err
	}
	b := &Batch{r: r, v: v, offer: o, id: r.seq.Add(1), dups: map[int][]int{}, blocks: map[int][]bool{}}
	for _, rg := range o.Ranges {
		b.ranges = append(b.ranges, pebble.ByteRange{Start: rg.Start, End: rg.End})
		b.chunks = append(b.chunks, rg.Chunks...)
	}
	if err := v.acquire(ctx, b.id, b.ranges); err != nil {
		return nil, Need{}, fmt.Errorf("volume %q busy: %w", o.Volume, err)
	}
	b.missing = make([]bool, len(b.chunks))
	b.got = make([]bool, len(b.chunks))
	need, err := b.plan()
	if err != nil {
		b.Abort()
		return nil, Need{}, err
	}
	return b, need, nil
}

func overlap(a, b []pebble.ByteRange) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Start < y.End && y.Start < x.End {
				return true
			}
		}
	}
	return false
}

// acquire waits until no batch in flight overlaps ranges, then registers
// batch id with them.
func (v *recvVolume) acquire(ctx context.Context, id uint64, ranges []pebble.ByteRange) error {
	for {
		v.imu.Lock()
		busy := false
		for _, rs := range v.inflight {
			if overlap(rs, ranges) {
				busy = true
				break
			}
		}
		if !busy {
			v.inflight[id] = ranges
			v.imu.Unlock()
			return nil
		}
		ch := v.released
		v.imu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (v *recvVolume) releaseBatch(id uint64) {
	v.imu.Lock()
	delete(v.inflight, id)
	close(v.released)
	v.released = make(chan struct{})
	v.imu.Unlock()
}

// otherInFlight reports whether c overlaps a range another batch in flight
// may be writing: such bytes are no copy source. (This batch's own ranges
// are read before it writes anything.)
func (b *Batch) otherInFlight(c pebble.ReplicaChunk) bool {
	cr := []pebble.ByteRange{{Start: c.Offset, End: c.End()}}
	b.v.imu.Lock()
	defer b.v.imu.Unlock()
	for id, rs := range b.v.inflight {
		if id != b.id && overlap(rs, cr) {
			return true
		}
	}
	return false
}

// plan decides, chunk by chunk, whether it is present, can be copied
// locally, or is missing.
func (b *Batch) plan() (Need, error) {
	st, name := b.r.cfg.Store, b.v.Name
	have := map[uint64]pebble.ReplicaChunk{}
	var haveList []pebble.ReplicaChunk // ascending offsets (ranges are sorted)
	err := st.ChunksInRanges(name, b.ranges, func(c pebble.ReplicaChunk) error {
		have[c.Offset] = c
		haveList = append(haveList, c)
		return nil
	})
	if err != nil {
		return Need{}, err
	}
	// The id filter says which chunks may have a copy elsewhere in the
	// replica; only those are looked up in the by-id index.
	mayHold := make([]bool, len(b.chunks))
	f := &b.v.ids
	f.mu.Lock()
	if err := f.ensure(st, name, b.v.Size/uint64(max(b.offer.Params.Avg, 1))); err != nil {
		f.mu.Unlock()
		return Need{}, err
	}
	for i, c := range b.chunks {
		mayHold[i] = f.mayHold(c.ID)
	}
	f.mu.Unlock()
	var finder *pebble.ChunkFinder
	defer func() {
		if finder != nil {
			finder.Close()
		}
	}()
	need := Need{Missing: b.missing}
	// Chunks are duplicates only if id and length agree: an offer's
	// lengths are not verified yet, and a chunk's bytes are written at
	// every duplicate's offset.
	type idLen struct {
		id  ID
		len uint32
	}
	firstMissing := map[idLen]int{}
	var patch []int // missing chunks to ask for by blocks, if they differ in few
	// Copies are read (and verified) first and written after the loop: a
	// source may lie in this batch's own ranges (data shifted by an
	// insertion), where an earlier copy would overwrite it.
	type copyOp struct {
		data []byte
		off  uint64
	}
	var copies []copyOp
	for i, c := range b.chunks {
		if h, ok := have[c.Offset]; ok && h.Length == c.Length && ID(h.ID) == c.ID {
			if b.offer.Point == 0 || !b.v.stagedOverlaps(c.Offset, c.End()) {
				need.Present++
				continue
			}
			// An earlier batch of this point staged over the chunk: stage
			// it again, from the image, so this batch's version wins.
			data := make([]byte, c.Length)
			if _, err := b.v.Image.ReadAt(data, int64(c.Offset)); err == nil && Sum(data) == c.ID {
				copies = append(copies, copyOp{data: data, off: c.Offset})
				need.Present++
				continue
			}
		}
		if j, ok := firstMissing[idLen{c.ID, c.Length}]; ok {
			b.dups[j] = append(b.dups[j], i)
			continue
		}
		var src pebble.ReplicaChunk
		ok := false
		if mayHold[i] {
			if finder == nil {
				var err error
				if finder, err = st.NewChunkFinder(name); err != nil {
					return Need{}, err
				}
			}
			var err error
			if src, ok, err = finder.Find(c.ID, b.otherInFlight); err != nil {
				return Need{}, err
			}
		}
		if ok && src.Length == c.Length {
			data := make([]byte, c.Length)
			if _, err := b.v.Image.ReadAt(data, int64(src.Offset)); err == nil && Sum(data) == c.ID {
				copies = append(copies, copyOp{data: data, off: c.Offset})
				need.Copied++
				continue
			}
			b.r.log.Warn("indexed chunk does not match the image; asking the sender", "volume", name, "offset", src.Offset)
		}
		b.missing[i] = true
		firstMissing[idLen{c.ID, c.Length}] = i
		b.pending++
		if len(c.Blocks) > 0 && overlapsAny(haveList, c) {
			// The replica held older data here: ask only for changed blocks.
			patch = append(patch, i)
		}
	}
	b.askBlocks(patch)
	for _, cp := range copies {
		if err := b.write(cp.data, cp.off); err != nil {
			return Need{}, err
		}
	}
	need.Blocks = b.blocks
	return need, nil
}

// overlapsAny reports whether an indexed chunk of have (ascending offsets,
// non-overlapping) overlaps c.
func overlapsAny(have []pebble.ReplicaChunk, c Chunk) bool {
	i := sort.Search(len(have), func(i int) bool { return have[i].End() > c.Offset })
	return i < len(have) && have[i].Offset < c.End()
}

// askBlocks reads the replica's older bytes of the chunks in patch, a few
// at a time (on a replica written with O_DIRECT they come from the
// device), and asks for the blocks of each whose fingerprints differ from
// the offer's, keeping the bytes for PutBlocks. A chunk that cannot be
// read, or that differs in every block, is asked for whole.
func (b *Batch) askBlocks(patch []int) {
	if len(patch) == 0 {
		return
	}
	b.old = make(map[int][]byte, len(patch))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, planReads)
	for _, i := range patch {
		c := b.chunks[i]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			old := make([]byte, c.Length)
			if _, err := b.v.Image.ReadAt(old, int64(c.Offset)); err != nil {
				return
			}
			mine := blockhash.BlockFingerprints(c.Offset, old)
			mask := make([]bool, len(mine))
			changed := 0
			for k := range mine {
				if mine[k] != c.Blocks[k] {
					mask[k] = true
					changed++
				}
			}
			if changed == len(mine) {
				return
			}
			mu.Lock()
			b.blocks[i], b.old[i] = mask, old
			mu.Unlock()
		}()
	}
	wg.Wait()
}

// planReads is how many older chunks a batch's plan reads at once.
const planReads = 8

// blockCount returns how many volume-aligned 4 KiB blocks c touches.
func blockCount(c Chunk) uint64 {
	return (c.End()-1)/blockhash.BlockSize - c.Offset/blockhash.BlockSize + 1
}

// write writes data at off in the image. The first write of a batch first
// marks its ranges applying, durably: a batch that writes nothing costs no
// marker, no image sync and no index write.
func (b *Batch) write(data []byte, off uint64) error {
	if b.offer.Point != 0 {
		return b.stage(data, off)
	}
	if !b.wrote {
		if err := b.r.cfg.Store.MarkApplying(b.v.Name, b.id, b.ranges); err != nil {
			return err
		}
	}
	b.wrote = true
	b.r.inPlace.Add(uint64(len(data)))
	return b.writes.write(b.v.Image, data, off, func(err error) error {
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("volume %q: write at %d: %w: %w", b.v.Name, off, ErrNoSpace, err)
		}
		return fmt.Errorf("volume %q: write at %d: %w", b.v.Name, off, err)
	})
}

// Put takes a run of chunks i, i+1, ... of one range, back to back in
// data. It verifies every chunk's length and BLAKE3-256 id before writing
// any of them, then writes the run at its offset (and copies of its chunks
// to later chunks of the batch with the same id). The write may still be
// in flight when Put returns: data must not change until Commit or Abort
// returns, and a failed write fails a later Put or the Commit.
func (b *Batch) Put(i uint32, data []byte) error {
	first := int(i)
	if first >= len(b.chunks) {
		return fmt.Errorf("volume %q: chunk %d of %d: %w", b.v.Name, i, len(b.chunks), ErrProtocol)
	}
	n := 0
	var sb sumBatch // chunks hashed several at a time
	for pos := 0; pos < len(data); n++ {
		j := first + n
		if j >= len(b.chunks) || !b.missing[j] || b.got[j] || (n > 0 && b.chunks[j].Offset != b.chunks[j-1].End()) {
			return fmt.Errorf("volume %q: chunk %d was not requested, came twice, or does not continue the run: %w", b.v.Name, j, ErrProtocol)
		}
		c := b.chunks[j]
		if b.blocks[j] != nil {
			return fmt.Errorf("volume %q: chunk %d was asked for by blocks: %w", b.v.Name, j, ErrProtocol)
		}
		if uint64(len(data)-pos) < uint64(c.Length) {
			return fmt.Errorf("volume %q: chunk %d at %d: %d bytes left in the run, offer said %d: %w", b.v.Name, j, c.Offset, len(data)-pos, c.Length, ErrChunkSize)
		}
		if !sb.add(pos, int(c.Length), j) && Sum(data[pos:pos+int(c.Length)]) != c.ID {
			return fmt.Errorf("volume %q: chunk %d at %d: %w", b.v.Name, j, c.Offset, ErrHashMismatch)
		}
		pos += int(c.Length)
	}
	if n == 0 {
		return fmt.Errorf("volume %q: empty run at chunk %d: %w", b.v.Name, i, ErrChunkSize)
	}
	var bad error
	sb.sum(data, func(j int, id ID) {
		if id != b.chunks[j].ID && bad == nil {
			bad = fmt.Errorf("volume %q: chunk %d at %d: %w", b.v.Name, j, b.chunks[j].Offset, ErrHashMismatch)
		}
	})
	if bad != nil {
		return bad
	}
	if err := b.write(data, b.chunks[first].Offset); err != nil {
		return err
	}
	pos := 0
	for j := first; j < first+n; j++ {
		c := b.chunks[j]
		for _, k := range b.dups[j] {
			if err := b.write(data[pos:pos+int(c.Length)], b.chunks[k].Offset); err != nil {
				return err
			}
		}
		pos += int(c.Length)
		b.got[j] = true
		b.pending--
	}
	return nil
}

// PutBlocks takes the blocks of chunk i that Need.Blocks asked for, back to
// back, patches them into the replica's old bytes of the chunk and writes
// the result if it hashes to the chunk's id. If it does not (the old bytes
// were not what their fingerprints suggested), the chunk is put on the
// retry list: Retry hands it back to be sent whole.
func (b *Batch) PutBlocks(i uint32, data []byte) error {
	j := int(i)
	if j >= len(b.chunks) || b.blocks[j] == nil || b.got[j] {
		return fmt.Errorf("volume %q: chunk %d was not asked for by blocks, or came twice: %w", b.v.Name, i, ErrProtocol)
	}
	c := b.chunks[j]
	// The plan read the chunk's older bytes; the batch's ranges are its
	// own since, so they are still the image's.
	buf := b.old[j]
	delete(b.old, j)
	if len(buf) != int(c.Length) {
		buf = make([]byte, c.Length)
		if _, err := b.v.Image.ReadAt(buf, int64(c.Offset)); err != nil {
			return fmt.Errorf("volume %q: read old chunk at %d: %w", b.v.Name, c.Offset, err)
		}
	}
	pos := 0
	bc := blockhash.Chunk{Offset: c.Offset, Length: uint64(c.Length)}
	for k, want := range b.blocks[j] {
		if !want {
			continue
		}
		lo, hi := blockhash.BlockRange(bc, k)
		n := int(hi - lo)
		if len(data)-pos < n {
			return fmt.Errorf("volume %q: chunk %d: blocks short by %d bytes: %w", b.v.Name, i, n-(len(data)-pos), ErrChunkSize)
		}
		copy(buf[lo-c.Offset:], data[pos:pos+n])
		pos += n
	}
	if pos != len(data) {
		return fmt.Errorf("volume %q: chunk %d: %d bytes of blocks past the requested ones: %w", b.v.Name, i, len(data)-pos, ErrChunkSize)
	}
	mask := b.blocks[j]
	b.blocks[j] = nil
	if Sum(buf) != c.ID {
		b.retry = append(b.retry, j)
		return nil
	}
	// The image holds the rest of the chunk already (buf was read from
	// it, and the batch's ranges are its own): write only the runs of
	// changed blocks, so a staged point stages and applies no more.
	for k := 0; k < len(mask); k++ {
		if !mask[k] {
			continue
		}
		first := k
		for k+1 < len(mask) && mask[k+1] {
			k++
		}
		lo, _ := blockhash.BlockRange(bc, first)
		_, hi := blockhash.BlockRange(bc, k)
		if err := b.write(buf[lo-c.Offset:hi-c.Offset], lo); err != nil {
			return err
		}
	}
	for _, k := range b.dups[j] {
		if err := b.write(buf, b.chunks[k].Offset); err != nil {
			return err
		}
	}
	b.got[j] = true
	b.pending--
	return nil
}

// Retry returns, once, the chunks patched from blocks that did not verify;
// the sender must send them whole before the batch can commit.
func (b *Batch) Retry() []int {
	r := b.retry
	b.retry = nil
	return r
}

// Commit syncs the image, commits the new index and clears the applying
// marker, then returns the acknowledgement, with the root over the whole
// chunk list if wantRoot. Only its success makes the batch durable.
func (b *Batch) Commit(wantRoot bool) (Ack, error) {
	if b.finished {
		return Ack{}, fmt.Errorf("volume %q: batch finished twice: %w", b.v.Name, ErrProtocol)
	}
	if b.pending != 0 {
		err := fmt.Errorf("volume %q: batch done with %d chunks still missing: %w", b.v.Name, b.pending, ErrProtocol)
		b.Abort()
		return Ack{}, err
	}
	defer b.release()
	if b.offer.Point != 0 {
		return b.commitStaged()
	}
	if err := b.writes.wait(); err != nil {
		b.abortLocked()
		return Ack{}, err
	}
	// A batch that wrote nothing (the replica held every chunk) has no
	// image bytes to sync.
	if err := b.syncImage(); err != nil {
		b.abortLocked()
		return Ack{}, err
	}
	idx := make([]pebble.ReplicaChunk, len(b.chunks))
	for i, c := range b.chunks {
		idx[i] = pebble.ReplicaChunk{Offset: c.Offset, Length: c.Length, ID: c.ID}
	}
	st := b.r.cfg.Store
	if err := st.CommitApplied(b.v.Name, b.id, b.ranges, idx); err != nil {
		b.abortLocked()
		return Ack{}, err
	}
	b.v.tree.changed(b.ranges)
	b.v.ids.add(idx)
	if err := b.r.storeMeta(b.v, b.offer.Params); err != nil {
		return Ack{}, err
	}
	if !wantRoot {
		return Ack{}, nil
	}
	info, err := b.r.root(b.v)
	if err != nil {
		return Ack{}, err
	}
	return Ack{Root: info.Root, Chunks: info.Chunks, HasRoot: true}, nil
}

// storeMeta records the replica's shape at its first commit, for good.
func (r *Receiver) storeMeta(v *recvVolume, p ChunkParams) error {
	v.mu.Lock()
	stored := v.stored
	v.mu.Unlock()
	if stored {
		return nil
	}
	if err := r.cfg.Store.SetMeta(v.Name, pebble.ReplicaMeta{Size: v.Size, Algorithm: p.Algorithm, Min: p.Min, Avg: p.Avg, Max: p.Max}); err != nil {
		return err
	}
	v.mu.Lock()
	v.params, v.stored = p, true
	v.mu.Unlock()
	return nil
}

func (b *Batch) syncImage() error {
	if !b.wrote {
		b.v.syncMu.Lock()
		defer b.v.syncMu.Unlock()
		if err := b.v.syncErr; err != nil {
			return fmt.Errorf("volume %q: an earlier fsync of the replica image failed, so no batch is acknowledged (fix the disk, then restart dmsyncd: batches since are sent again): %w", b.v.Name, err)
		}
		return nil
	}
	return b.r.syncVolume(b.v)
}

// syncVolume fsyncs the replica image; a failure is sticky (Linux reports
// a writeback error once), so nothing of the image is acknowledged after.
func (r *Receiver) syncVolume(v *recvVolume) error {
	v.syncMu.Lock()
	defer v.syncMu.Unlock()
	if v.syncErr != nil {
		return fmt.Errorf("volume %q: an earlier fsync of the replica image failed, so no batch is acknowledged (fix the disk, then restart dmsyncd: batches since are sent again): %w", v.Name, v.syncErr)
	}
	if err := v.Image.Sync(); err != nil {
		v.syncErr = err
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("volume %q: sync: %w: %w", v.Name, ErrNoSpace, err)
		}
		return fmt.Errorf("volume %q: sync: %w", v.Name, err)
	}
	return nil
}

// Abort ends a batch without committing it. If anything was written, the
// index entries of its ranges are dropped and its marker stays, so status
// shows the replica as not clean until a later batch covers the ranges.
func (b *Batch) Abort() {
	if b.finished {
		return
	}
	defer b.release()
	b.abortLocked()
}

func (b *Batch) abortLocked() {
	// No write of the batch may land after its index entries are dropped
	// and its ranges are free.
	b.writes.wait()
	if b.offer.Point != 0 {
		b.abortStaged()
		return
	}
	if b.wrote {
		if err := b.r.cfg.Store.DropApplied(b.v.Name, b.ranges); err != nil {
			b.r.log.Error("drop index of aborted batch", "volume", b.v.Name, "err", err)
		}
		b.v.tree.changed(b.ranges)
	}
	// Nothing written: no marker was made.
}

func (b *Batch) release() {
	b.writes.wait()
	if !b.finished {
		b.finished = true
		b.v.releaseBatch(b.id)
	}
}
