package rpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dmsync/dmsync/blockhash"
)

// Verify compares the source with the replica's real bytes: the receiver
// re-reads its image and hashes it in pieces (Receiver.Scrub), the sender
// reads its source in the same pieces, and the pieces whose digests differ
// are the ranges that differ; a second, smaller scrub narrows them down to
// 4 KiB. The old comparison of the source's chunk list with the replica's
// stored index (the Merkle trees) is kept as an option: it tells whether
// the index, which decides what the receiver asks for, still describes
// the image, but it cannot see bytes changed behind the index's back.

// VerifyOptions tunes VerifyWith; the zero value scrubs the whole image in
// DefaultScrubPiece pieces at the receiver's default rate.
type VerifyOptions struct {
	// Piece is the bytes per digest of the whole-image pass (0:
	// DefaultScrubPiece).
	Piece uint32
	// Rate bounds the receiver's read rate in bytes per second (0:
	// DefaultScrubRate).
	Rate uint64
	// Index also compares the source's chunk list with the replica's
	// stored index, as verify did before scrubbing: it reads the source a
	// second time.
	Index bool
	// MaxRefine bounds the differing bytes that are scrubbed once more in
	// 4 KiB pieces to list them exactly (0: 256 MiB); past it, the
	// differing pieces are listed as they are.
	MaxRefine uint64
	// OnScrub, if set, is called with the bytes of the image the receiver
	// has hashed so far, after every message (for a progress bar).
	OnScrub func(scrubbed uint64)
}

// VerifyResult compares the source with the peer's replica.
type VerifyResult struct {
	// Equal is true if the replica's image bytes equal the source's, no
	// batch was in flight on the replica, and (with Index) the index
	// matched too.
	Equal bool
	// Differ lists the byte ranges, merged, where the replica's image
	// bytes differ from the source's.
	Differ []blockhash.Range
	// Applying is true if the replica had a batch in flight or half
	// applied while it was read: verify again once it is idle.
	Applying bool
	// Scrubbed counts the image bytes the receiver hashed and ScrubTime
	// the time it took, over both passes (the whole image, then the
	// differing pieces in 4 KiB pieces).
	Scrubbed  uint64
	ScrubTime time.Duration

	// With VerifyOptions.Index: the chunk-list roots of both sides, and
	// the byte ranges where the replica's index differs from the source's
	// chunk list, found by descending both Merkle trees.
	IndexChecked    bool
	IndexEqual      bool
	Source, Replica RootInfo
	IndexDiffer     []blockhash.Range
	Diff            blockhash.DiffStats
}

// Verify is VerifyWith with the index comparison: the image's bytes and
// the replica's index must both match the source.
func (s *Sender) Verify(ctx context.Context) (VerifyResult, error) {
	return s.VerifyWith(ctx, VerifyOptions{Index: true})
}

// VerifyWith compares the source with the replica's image bytes (and, with
// o.Index, its index). The volume should be quiet: bytes written while
// verify reads them show as different.
func (s *Sender) VerifyWith(ctx context.Context, o VerifyOptions) (VerifyResult, error) {
	if o.MaxRefine == 0 {
		o.MaxRefine = 256 << 20
	}
	var res VerifyResult
	t0 := time.Now()
	coarse, err := s.scrubCompare(ctx, ScrubRequest{Volume: s.cfg.Volume, Piece: o.Piece, Rate: o.Rate}, &res, o.OnScrub)
	if err != nil {
		return res, fmt.Errorf("verify %s: %w", s.cfg.Volume, err)
	}
	res.Differ = coarse
	if total := rangesBytes(coarse); len(coarse) > 0 && total <= o.MaxRefine && (o.Piece == 0 || o.Piece > MinScrubPiece) {
		fine, err := s.scrubCompare(ctx, ScrubRequest{Volume: s.cfg.Volume, Piece: MinScrubPiece, Rate: o.Rate, Ranges: coarse}, &res, o.OnScrub)
		if err != nil {
			return res, fmt.Errorf("verify %s: narrow down %d differing bytes: %w", s.cfg.Volume, total, err)
		}
		res.Differ = fine
	}
	res.Equal = len(res.Differ) == 0 && !res.Applying
	res.ScrubTime = time.Since(t0)
	if o.Index {
		if err := s.verifyIndex(ctx, &res); err != nil {
			return res, err
		}
		res.Equal = res.Equal && res.IndexEqual
	}
	return res, nil
}

func rangesBytes(rs []blockhash.Range) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.Len
	}
	return n
}

// sourcePieces is a run of the source's piece digests.
type sourcePieces struct {
	off, end uint64
	sums     []ID
	err      error
}

// scrubCompare runs one scrub on the receiver while reading the same
// pieces of the source, and returns the merged ranges whose digests
// differ.
func (s *Sender) scrubCompare(ctx context.Context, req ScrubRequest, res *VerifyResult, onScrub func(uint64)) ([]blockhash.Range, error) {
	piece, ranges, err := scrubPlan(req, s.cfg.Size)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	// The source is read ahead by one goroutine (unpaced: the rate bounds
	// the receiver's disk, and the sender's read is bounded by the
	// receiver's pace through this channel).
	src := make(chan sourcePieces, 16)
	go func() {
		defer close(done)
		defer close(src)
		for _, rg := range ranges {
			err := hashRange(ctx, s.cfg.Source, rg, uint64(piece), max(uint64(piece), scrubIO), nil, 4<<20, func(off, end uint64, sums []ID) error {
				select {
				case src <- sourcePieces{off: off, end: end, sums: sums}:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil {
				select {
				case src <- sourcePieces{err: fmt.Errorf("%w: %w", ErrSource, err)}:
				case <-ctx.Done():
				}
				return
			}
		}
	}()
	var (
		differ []blockhash.Range
		cur    sourcePieces // the source's run being compared
		ci     int          // next piece of cur
		next   int          // next range of the plan the receiver's pieces must start
		want   uint64       // offset the receiver's next message must start at
		inRun  bool
	)
	nextSource := func() (ID, blockhash.Range, error) {
		for ci >= len(cur.sums) {
			p, ok := <-src
			if !ok {
				return ID{}, blockhash.Range{}, errors.New("the source's pieces ended before the replica's")
			}
			if p.err != nil {
				return ID{}, blockhash.Range{}, p.err
			}
			cur, ci = p, 0
		}
		off := cur.off + uint64(ci)*uint64(piece)
		id := cur.sums[ci]
		ci++
		return id, blockhash.Range{Off: off, Len: min(uint64(piece), cur.end-off)}, nil
	}
	err = s.cfg.Transport.Scrub(ctx, req, func(d ScrubDigests) error {
		if !inRun {
			if next >= len(ranges) {
				return fmt.Errorf("replica sent digests past the ranges asked for: %w", ErrProtocol)
			}
			want, inRun = ranges[next].Off, true
		}
		rg := ranges[next]
		if d.Piece != piece || d.Offset != want || d.End <= d.Offset || d.End > rg.End() ||
			uint64(len(d.Sums)) != (d.End-d.Offset+uint64(piece)-1)/uint64(piece) {
			return fmt.Errorf("replica sent digests for [%d, %d) in %d-byte pieces (%d of them), want pieces of %d from %d within [%d, %d): %w",
				d.Offset, d.End, d.Piece, len(d.Sums), piece, want, rg.Off, rg.End(), ErrProtocol)
		}
		res.Applying = res.Applying || d.Applying
		for i, sum := range d.Sums {
			mine, at, err := nextSource()
			if err != nil {
				return err
			}
			if at != d.PieceRange(i) {
				return fmt.Errorf("source piece %v but replica piece %v: %w", at, d.PieceRange(i), ErrProtocol)
			}
			if mine != sum {
				if n := len(differ); n > 0 && differ[n-1].End() == at.Off {
					differ[n-1].Len += at.Len
				} else {
					differ = append(differ, at)
				}
			}
		}
		res.Scrubbed += d.End - d.Offset
		if onScrub != nil {
			onScrub(res.Scrubbed)
		}
		want = d.End
		if want == rg.End() {
			next, inRun = next+1, false
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scrub the replica: %w", err)
	}
	if next != len(ranges) {
		return nil, fmt.Errorf("replica's scrub ended at byte %d of [%d, %d), range %d of %d: %w", want, ranges[min(next, len(ranges)-1)].Off, ranges[min(next, len(ranges)-1)].End(), next, len(ranges), ErrProtocol)
	}
	return differ, nil
}

// verifyIndex is verify as it was before scrubbing: chunk the whole source
// from scratch, compare its root with the replica's index root, and if
// they differ, descend both Merkle trees (the peer's node by node over the
// wire).
func (s *Sender) verifyIndex(ctx context.Context, res *VerifyResult) error {
	chunks, err := SourceChunks(s.cfg.Chunker, s.cfg.Source, s.cfg.Size)
	if err != nil {
		return fmt.Errorf("verify %s: %w", s.cfg.Volume, err)
	}
	tree := TreeOf(chunks)
	root, n := tree.Root(), uint64(len(chunks))
	res.Source = RootInfo{Root: root, Chunks: n, VolumeSize: s.cfg.Size, Covered: s.cfg.Size}
	peer, err := s.cfg.Transport.Root(ctx, s.cfg.Volume)
	if err != nil {
		return fmt.Errorf("verify %s: %w", s.cfg.Volume, err)
	}
	res.Replica, res.IndexChecked = peer, true
	res.IndexEqual = peer.Root == root && !peer.Applying
	res.Applying = res.Applying || peer.Applying
	if peer.Root != root {
		res.IndexDiffer, res.Diff, err = tree.Diff(s.cfg.Transport.Tree(ctx, s.cfg.Volume))
		if err != nil {
			return fmt.Errorf("verify %s: diff trees: %w", s.cfg.Volume, err)
		}
	}
	return nil
}

// RegionsOf returns the regions (of regionSize bytes, in a volume of size
// bytes) that hold any byte of ranges, ascending, and their byte spans,
// merged.
func RegionsOf(ranges []blockhash.Range, regionSize, size uint64) ([]uint64, []blockhash.Range) {
	var regions []uint64
	var spans []blockhash.Range
	for _, r := range ranges {
		if r.Len == 0 || regionSize == 0 {
			continue
		}
		first, last := r.Off/regionSize, (r.End()-1)/regionSize
		for g := first; g <= last; g++ {
			if n := len(regions); n > 0 && regions[n-1] >= g {
				continue
			}
			regions = append(regions, g)
			spans = append(spans, blockhash.Range{Off: g * regionSize, Len: regionSize})
		}
	}
	return regions, MergeRanges(spans, size)
}

// RegionPender is the dirty log's way to make given regions pending again
// (*logd.Server and logapi.Client implement it).
type RegionPender interface {
	PendRegions(uuid string, regions []uint64) error
}

// Repair makes the replica fetch the given ranges (VerifyResult.Differ)
// again, and returns the regions it made pending. In this order, so no
// pass can skip them: the receiver drops its index over the regions
// holding the ranges (it would otherwise answer "present" from an index
// that no longer matches its image), the sender forgets the fingerprints
// it remembered as acknowledged, and the dirty log (which must be a
// RegionPender) makes the regions pending with new generations. A live
// sender of the same volume, if not s, goes in live: it forgets its
// fingerprints at the same point.
func (s *Sender) Repair(ctx context.Context, differ []blockhash.Range, live ...*Sender) ([]uint64, error) {
	if len(differ) == 0 {
		return nil, nil
	}
	p, ok := s.cfg.Log.(RegionPender)
	if !ok {
		return nil, fmt.Errorf("repair %s: this dirty log cannot make regions pending again", s.cfg.Volume)
	}
	regionSize, _, err := s.cfg.Log.RegionSize(s.cfg.Volume)
	if err != nil {
		return nil, fmt.Errorf("repair %s: %w", s.cfg.Volume, err)
	}
	regions, spans := RegionsOf(differ, regionSize, s.cfg.Size)
	aligned := make([]blockhash.Range, 0, len(spans))
	for _, sp := range spans { // the receiver wants piece-aligned ranges
		off := sp.Off &^ (MinScrubPiece - 1)
		aligned = append(aligned, blockhash.Range{Off: off, Len: sp.End() - off})
	}
	err = s.cfg.Transport.Scrub(ctx, ScrubRequest{Volume: s.cfg.Volume, Piece: MinScrubPiece, Ranges: aligned, Forget: true}, func(ScrubDigests) error {
		return fmt.Errorf("replica sent digests for a forget: %w", ErrProtocol)
	})
	if err != nil {
		return nil, fmt.Errorf("repair %s: make the replica forget its index over %d ranges: %w", s.cfg.Volume, len(aligned), err)
	}
	s.ForgetAcked()
	for _, l := range live {
		l.ForgetAcked()
	}
	if err := p.PendRegions(s.cfg.Volume, regions); err != nil {
		return nil, fmt.Errorf("repair %s: make %d regions pending: %w", s.cfg.Volume, len(regions), err)
	}
	s.log.Info("repair: regions that differ on the replica are pending again", "regions", len(regions), "ranges", len(differ))
	return regions, nil
}
