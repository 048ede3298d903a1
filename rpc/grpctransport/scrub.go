package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// Scrub implements rpc.Transport. The stream is aborted with
// rpc.ErrUnavailable once no message came for the Liveness stall bound (the
// receiver sends one at least about every second of reading).
func (c *Client) Scrub(ctx context.Context, req rpc.ScrubRequest, each func(rpc.ScrubDigests) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := newStallTimer(c.stall, cancel)
	defer t.stop()
	preq := &pb.ScrubRequest{Volume: req.Volume, PieceSize: req.Piece, Rate: req.Rate, Forget: req.Forget}
	for _, r := range req.Ranges {
		preq.Ranges = append(preq.Ranges, &pb.ByteRange{Offset: r.Off, Length: r.Len})
	}
	s, err := c.c.Scrub(ctx, preq)
	if err != nil {
		return stallCause(ctx, t, fromStatus(err))
	}
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return stallCause(ctx, t, fromStatus(err))
		}
		t.progress()
		d, err := scrubFromPB(m)
		if err != nil {
			return err
		}
		if err := each(d); err != nil {
			return err
		}
	}
}

func scrubFromPB(m *pb.ScrubResponse) (rpc.ScrubDigests, error) {
	raw := m.GetDigests()
	if len(raw)%len(rpc.ID{}) != 0 {
		return rpc.ScrubDigests{}, fmt.Errorf("scrub digests of %d bytes, not a multiple of %d: %w", len(raw), len(rpc.ID{}), rpc.ErrProtocol)
	}
	d := rpc.ScrubDigests{Offset: m.GetOffset(), End: m.GetEnd(), Piece: m.GetPieceSize(), Applying: m.GetApplying(),
		Sums: make([]rpc.ID, len(raw)/len(rpc.ID{}))}
	for i := range d.Sums {
		copy(d.Sums[i][:], raw[i*len(rpc.ID{}):])
	}
	return d, nil
}

// Scrub serves rpc.Receiver.Scrub: the receiver paces its own reads, and
// gRPC's flow control holds it back when the sender reads its source more
// slowly.
func (s *server) Scrub(req *pb.ScrubRequest, stream pb.Replica_ScrubServer) error {
	ctx := stream.Context()
	id, err := peerID(ctx)
	if err != nil {
		return toStatus(err)
	}
	r := rpc.ScrubRequest{Volume: req.GetVolume(), Piece: req.GetPieceSize(), Rate: req.GetRate(), Forget: req.GetForget()}
	for _, br := range req.GetRanges() {
		r.Ranges = append(r.Ranges, blockhash.Range{Off: br.GetOffset(), Len: br.GetLength()})
	}
	err = s.recv.Scrub(ctx, id, r, func(d rpc.ScrubDigests) error {
		raw := make([]byte, 0, len(d.Sums)*len(rpc.ID{}))
		for _, sum := range d.Sums {
			raw = append(raw, sum[:]...)
		}
		return stream.Send(&pb.ScrubResponse{Offset: d.Offset, End: d.End, PieceSize: d.Piece, Digests: raw, Applying: d.Applying})
	})
	if err != nil {
		s.log.Warn("scrub failed", "volume", r.Volume, "peer", id, "err", err)
	}
	return toStatus(err)
}
