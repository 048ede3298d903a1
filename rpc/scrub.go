package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"

	"golang.org/x/time/rate"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/pebble"
)

// Scrub: the receiver re-reads its image and hashes it in fixed pieces,
// straight from the bytes (never from its index), at a bounded read rate,
// so that a sender can compare the replica's real bytes with its source
// (Sender.VerifyWith).

const (
	// DefaultScrubPiece is the bytes per digest of a whole-image scrub.
	DefaultScrubPiece = 1 << 20
	// MinScrubPiece and MaxScrubPiece bound ScrubRequest.Piece.
	MinScrubPiece = blockhash.BlockSize
	MaxScrubPiece = 16 << 20
	// DefaultScrubRate is the receiver's read rate while it scrubs, in
	// bytes per second, unless the request asks for another.
	DefaultScrubRate = 200 << 20
	// MinScrubRate is the least rate a request may ask for: slower, a
	// digest message would come less often than a stream's stall bound.
	MinScrubRate = 1 << 20
	// scrubIO is the least a scrub reads from its image at once: small
	// pieces are hashed out of one larger read.
	scrubIO = 1 << 20
	// scrubMsgBytes bounds the image bytes one ScrubDigests covers (and
	// so does about one second of reading at the scrub's rate: the
	// stream shows progress at least that often).
	scrubMsgBytes = 8 << 20
	// maxScrubRanges bounds the ranges of one request.
	maxScrubRanges = 1 << 16
)

// ScrubRequest asks a receiver for the digests of its image of Volume.
type ScrubRequest struct {
	Volume string
	// Piece is the bytes per digest: a power of two from MinScrubPiece to
	// MaxScrubPiece (0: DefaultScrubPiece).
	Piece uint32
	// Rate bounds the bytes per second the receiver reads (0:
	// DefaultScrubRate); the receiver's own cap (ReceiverConfig.MaxScrubRate)
	// bounds it further, over all scrubs together.
	Rate uint64
	// Ranges limits the scrub to these byte ranges, each starting at a
	// multiple of Piece (none: the whole image). The receiver sorts and
	// merges them and clips them to the volume.
	Ranges []blockhash.Range
	// Forget asks the receiver to drop, durably, its index entries that
	// overlap Ranges instead of hashing anything: the next offer of those
	// chunks is then answered from the sender's bytes, not from an index
	// that no longer matches the image (verify --repair).
	Forget bool
}

// ScrubDigests holds the digests of consecutive pieces of [Offset, End):
// Sums[i] is the BLAKE3-256 (Sum) of the image's bytes
// [Offset+i*Piece, min(Offset+(i+1)*Piece, End)).
type ScrubDigests struct {
	Offset, End uint64
	Piece       uint32
	Sums        []ID
	// Applying is true if a batch was in flight, or half applied, while
	// these pieces were read: they may be about to change.
	Applying bool
}

// PieceRange returns the byte range of piece i.
func (d ScrubDigests) PieceRange(i int) blockhash.Range {
	off := d.Offset + uint64(i)*uint64(d.Piece)
	return blockhash.Range{Off: off, Len: min(uint64(d.Piece), d.End-off)}
}

// waiter is what a scrub paces its reads with (*rate.Limiter); tests
// count through it.
type waiter interface {
	WaitN(ctx context.Context, n int) error
}

// newScrubPacer returns the pacer of one scrub: bytesPerSec with bursts of
// at most burst bytes (one read).
var newScrubPacer = func(bytesPerSec uint64, burst int) waiter {
	return rate.NewLimiter(rate.Limit(bytesPerSec), burst)
}

// bothPacers waits for each of its pacers in turn: a scrub's own rate and
// the receiver's cap over all scrubs.
type bothPacers [2]waiter

func (b bothPacers) WaitN(ctx context.Context, n int) error {
	for _, w := range b {
		if err := w.WaitN(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// scrubPlan checks req against a volume of size bytes and returns its
// piece size and its ranges, sorted, merged and clipped.
func scrubPlan(req ScrubRequest, size uint64) (uint32, []blockhash.Range, error) {
	piece := req.Piece
	if piece == 0 {
		piece = DefaultScrubPiece
	}
	if piece < MinScrubPiece || piece > MaxScrubPiece || bits.OnesCount32(piece) != 1 {
		return 0, nil, fmt.Errorf("scrub piece of %d bytes: want a power of two from %d to %d: %w", piece, MinScrubPiece, MaxScrubPiece, ErrProtocol)
	}
	if len(req.Ranges) > maxScrubRanges {
		return 0, nil, fmt.Errorf("scrub of %d ranges: at most %d: %w", len(req.Ranges), maxScrubRanges, ErrProtocol)
	}
	if len(req.Ranges) == 0 {
		return piece, []blockhash.Range{{Off: 0, Len: size}}, nil
	}
	rs := slices.Clone(req.Ranges)
	for _, r := range rs {
		if r.Off%uint64(piece) != 0 || r.Len == 0 || r.Off >= size || r.End() < r.Off {
			return 0, nil, fmt.Errorf("scrub range [%d, +%d) of a %d-byte volume: want a non-empty range inside it starting at a multiple of %d: %w", r.Off, r.Len, size, piece, ErrProtocol)
		}
	}
	return piece, MergeRanges(rs, size), nil
}

// MergeRanges sorts rs, merges ranges that overlap or touch, and clips
// them to [0, size); empty ranges go.
func MergeRanges(rs []blockhash.Range, size uint64) []blockhash.Range {
	slices.SortFunc(rs, func(a, b blockhash.Range) int {
		switch {
		case a.Off < b.Off:
			return -1
		case a.Off > b.Off:
			return 1
		}
		return 0
	})
	var out []blockhash.Range
	for _, r := range rs {
		end := min(r.End(), size)
		if r.Off >= end {
			continue
		}
		if n := len(out); n > 0 && r.Off <= out[n-1].End() {
			out[n-1].Len = max(out[n-1].End(), end) - out[n-1].Off
			continue
		}
		out = append(out, blockhash.Range{Off: r.Off, Len: end - r.Off})
	}
	return out
}

// Scrub reads the replica's image of req.Volume in pieces at most req.Rate
// bytes per second and calls emit with the digests of consecutive pieces,
// in ascending offset order, each call covering at most 8 MiB of image
// or about one second of reading.
// With req.Forget it drops the index entries over req.Ranges instead and
// calls emit never.
func (r *Receiver) Scrub(ctx context.Context, peer string, req ScrubRequest, emit func(ScrubDigests) error) error {
	v, err := r.volume(peer, req.Volume)
	if err != nil {
		return err
	}
	piece, ranges, err := scrubPlan(req, v.Size)
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if req.Forget {
		if len(req.Ranges) == 0 {
			return fmt.Errorf("volume %q: forget needs ranges (it never drops the whole index): %w", v.Name, ErrProtocol)
		}
		br := make([]pebble.ByteRange, len(ranges))
		for i, rg := range ranges {
			br[i] = pebble.ByteRange{Start: rg.Off, End: rg.End()}
		}
		if err := r.cfg.Store.DropApplied(v.Name, br); err != nil {
			return fmt.Errorf("volume %q: forget the index over %d ranges: %w", v.Name, len(br), err)
		}
		v.tree.changed(br)
		r.log.Info("scrub repair: dropped the index over ranges that differ from the sender", "volume", v.Name, "peer", peer, "ranges", len(br))
		return nil
	}
	bps := req.Rate
	if bps == 0 {
		bps = DefaultScrubRate
	}
	if bps < MinScrubRate {
		return fmt.Errorf("volume %q: scrub rate of %d bytes/s: ask for at least %d (1 MiB/s): %w", v.Name, bps, MinScrubRate, ErrProtocol)
	}
	if bps > r.cfg.MaxScrubRate {
		bps = r.cfg.MaxScrubRate
	}
	ioSize := max(uint64(piece), scrubIO)
	pace := bothPacers{newScrubPacer(bps, int(ioSize)), r.scrubCap}
	r.log.Info("scrub started", "volume", v.Name, "peer", peer, "piece", piece, "rate", bps, "ranges", len(ranges))
	flush := min(scrubMsgBytes, max(ioSize, bps))
	s := scrubber{r: r, v: v, piece: uint64(piece), io: ioSize, flush: flush, pace: pace, emit: emit}
	for _, rg := range ranges {
		if err := s.scrubRange(ctx, rg); err != nil {
			return fmt.Errorf("scrub volume %q: %w", v.Name, err)
		}
	}
	return nil
}

type scrubber struct {
	r         *Receiver
	v         *recvVolume
	piece, io uint64
	flush     uint64
	pace      waiter
	emit      func(ScrubDigests) error
}

// busy reports whether a batch of the volume is in flight or half applied.
func (s *scrubber) busy() bool {
	s.v.imu.Lock()
	n := len(s.v.inflight)
	s.v.imu.Unlock()
	if n > 0 {
		return true
	}
	ms, err := s.r.cfg.Store.Applying(s.v.Name)
	return err != nil || len(ms) > 0
}

func (s *scrubber) scrubRange(ctx context.Context, rg blockhash.Range) error {
	applying := s.busy()
	return hashRange(ctx, s.v.Image, rg, s.piece, s.io, s.pace, s.flush, func(off, end uint64, sums []ID) error {
		busy := s.busy()
		d := ScrubDigests{Offset: off, End: end, Piece: uint32(s.piece), Sums: sums, Applying: applying || busy}
		applying = busy
		return s.emit(d)
	})
}

// scrubRead is one read of the image, in order.
type scrubRead struct {
	off  uint64
	data []byte
	err  error
}

// hashRange reads rg from img in reads of ioSize bytes (a multiple of
// piece), each after pace allows it (nil: unpaced), and calls emit with the
// digests of consecutive pieces whenever they cover flushBytes or rg ends.
// A goroutine reads ahead while this one hashes, so the disk and the hash
// overlap; it is gone when hashRange returns.
func hashRange(ctx context.Context, img io.ReaderAt, rg blockhash.Range, piece, ioSize uint64, pace waiter, flushBytes uint64, emit func(off, end uint64, sums []ID) error) error {
	ctx, cancel := context.WithCancel(ctx)
	const depth = 4
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, ioSize)
	}
	reads := make(chan scrubRead, depth)
	defer func() {
		cancel()
		for range reads { // the reader is gone once reads is closed
		}
	}()
	go func() {
		defer close(reads)
		for off := rg.Off; off < rg.End(); {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return
			}
			n := min(ioSize, rg.End()-off)
			if pace != nil {
				if err := pace.WaitN(ctx, int(n)); err != nil {
					reads <- scrubRead{err: err}
					return
				}
			}
			buf = buf[:n]
			_, err := img.ReadAt(buf, int64(off))
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("image ends before byte %d: %w", off+n, err)
			}
			if err != nil {
				reads <- scrubRead{err: fmt.Errorf("read at %d: %w", off, err)}
				return
			}
			reads <- scrubRead{off: off, data: buf}
			off += n
		}
	}()
	start := rg.Off
	var sums []ID
	for rd := range reads {
		if rd.err != nil {
			return rd.err
		}
		for p := uint64(0); p < uint64(len(rd.data)); p += piece {
			sums = append(sums, Sum(rd.data[p:min(p+piece, uint64(len(rd.data)))]))
		}
		end := rd.off + uint64(len(rd.data))
		free <- rd.data[:cap(rd.data)]
		if end-start >= flushBytes || end == rg.End() {
			if err := emit(start, end, sums); err != nil {
				return err
			}
			start, sums = end, nil
		}
	}
	if start != rg.End() {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("read of [%d, %d) stopped at %d", rg.Off, rg.End(), start)
	}
	return nil
}
