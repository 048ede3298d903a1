package grpctransport

import (
	"fmt"
	"time"

	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

func toID(b []byte) (rpc.ID, error) {
	var id rpc.ID
	if len(b) != len(id) {
		return id, fmt.Errorf("id of %d bytes, want %d: %w", len(b), len(id), rpc.ErrBadOffer)
	}
	copy(id[:], b)
	return id, nil
}

func offerToPB(o *rpc.Offer) *pb.Offer {
	p := &pb.Offer{
		Volume: o.Volume, VolumeSize: o.VolumeSize, Batch: o.Batch, Point: o.Point,
		Params: &pb.ChunkParams{Algorithm: o.Params.Algorithm, MinSize: o.Params.Min, AvgSize: o.Params.Avg, MaxSize: o.Params.Max},
	}
	for _, r := range o.Ranges {
		pr := &pb.Range{Start: r.Start, End: r.End, Chunks: make([]*pb.Chunk, len(r.Chunks))}
		for i, c := range r.Chunks {
			pr.Chunks[i] = &pb.Chunk{Offset: c.Offset, Length: c.Length, Id: c.ID[:], Blocks: c.Blocks}
		}
		p.Ranges = append(p.Ranges, pr)
	}
	return p
}

func offerFromPB(p *pb.Offer) (*rpc.Offer, error) {
	pp := p.GetParams()
	o := &rpc.Offer{
		Volume: p.GetVolume(), VolumeSize: p.GetVolumeSize(), Batch: p.GetBatch(), Point: p.GetPoint(),
		Params: rpc.ChunkParams{Algorithm: pp.GetAlgorithm(), Min: pp.GetMinSize(), Avg: pp.GetAvgSize(), Max: pp.GetMaxSize()},
	}
	for _, pr := range p.GetRanges() {
		r := rpc.Range{Start: pr.GetStart(), End: pr.GetEnd(), Chunks: make([]rpc.Chunk, len(pr.GetChunks()))}
		for i, c := range pr.GetChunks() {
			id, err := toID(c.GetId())
			if err != nil {
				return nil, err
			}
			r.Chunks[i] = rpc.Chunk{Offset: c.GetOffset(), Length: c.GetLength(), ID: id, Blocks: c.GetBlocks()}
		}
		o.Ranges = append(o.Ranges, r)
	}
	return o, nil
}

func toBitmap(bits []bool) []byte {
	bm := make([]byte, (len(bits)+7)/8)
	for i, m := range bits {
		if m {
			bm[i/8] |= 1 << (i % 8)
		}
	}
	return bm
}

func fromBitmap(bm []byte, n int) ([]bool, error) {
	if len(bm) != (n+7)/8 {
		return nil, fmt.Errorf("bitmap of %d bytes for %d entries: %w", len(bm), n, rpc.ErrProtocol)
	}
	bits := make([]bool, n)
	for i := range bits {
		bits[i] = bm[i/8]&(1<<(i%8)) != 0
	}
	return bits, nil
}

func needToPB(n rpc.Need) *pb.Need {
	p := &pb.Need{Missing: toBitmap(n.Missing), Copied: uint32(n.Copied), Present: uint32(n.Present)}
	for i, mask := range n.Blocks {
		if mask != nil {
			p.Partial = append(p.Partial, &pb.BlockMask{Index: uint32(i), Blocks: toBitmap(mask)})
		}
	}
	return p
}

// needFromPB decodes a Need for offer o.
func needFromPB(p *pb.Need, o *rpc.Offer) (rpc.Need, error) {
	chunks := o.NumChunks()
	missing, err := fromBitmap(p.GetMissing(), chunks)
	if err != nil {
		return rpc.Need{}, err
	}
	n := rpc.Need{Missing: missing, Copied: int(p.GetCopied()), Present: int(p.GetPresent())}
	if len(p.GetPartial()) > 0 {
		all := make([]rpc.Chunk, 0, chunks)
		for _, r := range o.Ranges {
			all = append(all, r.Chunks...)
		}
		n.Blocks = map[int][]bool{}
		for _, m := range p.GetPartial() {
			i := int(m.GetIndex())
			if i >= chunks || !missing[i] || len(all[i].Blocks) == 0 || n.Blocks[i] != nil {
				return rpc.Need{}, fmt.Errorf("block mask for chunk %d, which is not missing or has no blocks: %w", i, rpc.ErrProtocol)
			}
			if n.Blocks[i], err = fromBitmap(m.GetBlocks(), len(all[i].Blocks)); err != nil {
				return rpc.Need{}, err
			}
		}
	}
	return n, nil
}

func pointToPB(p rpc.RecoveryPoint) *pb.RecoveryPoint {
	if p.Seq == 0 {
		return nil
	}
	return &pb.RecoveryPoint{Seq: p.Seq, TakenAtUnixNano: p.TakenAt.UnixNano(), AppliedAtUnixNano: p.AppliedAt.UnixNano()}
}

func pointFromPB(p *pb.RecoveryPoint) rpc.RecoveryPoint {
	if p.GetSeq() == 0 {
		return rpc.RecoveryPoint{}
	}
	return rpc.RecoveryPoint{Seq: p.GetSeq(), TakenAt: time.Unix(0, p.GetTakenAtUnixNano()), AppliedAt: time.Unix(0, p.GetAppliedAtUnixNano())}
}
