package grpctransport

import (
	"fmt"

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
		Volume: o.Volume, VolumeSize: o.VolumeSize, Batch: o.Batch,
		Params: &pb.ChunkParams{Algorithm: o.Params.Algorithm, MinSize: o.Params.Min, AvgSize: o.Params.Avg, MaxSize: o.Params.Max},
	}
	for _, r := range o.Ranges {
		pr := &pb.Range{Start: r.Start, End: r.End, Chunks: make([]*pb.Chunk, len(r.Chunks))}
		for i, c := range r.Chunks {
			pr.Chunks[i] = &pb.Chunk{Offset: c.Offset, Length: c.Length, Id: c.ID[:]}
		}
		p.Ranges = append(p.Ranges, pr)
	}
	return p
}

func offerFromPB(p *pb.Offer) (*rpc.Offer, error) {
	pp := p.GetParams()
	o := &rpc.Offer{
		Volume: p.GetVolume(), VolumeSize: p.GetVolumeSize(), Batch: p.GetBatch(),
		Params: rpc.ChunkParams{Algorithm: pp.GetAlgorithm(), Min: pp.GetMinSize(), Avg: pp.GetAvgSize(), Max: pp.GetMaxSize()},
	}
	for _, pr := range p.GetRanges() {
		r := rpc.Range{Start: pr.GetStart(), End: pr.GetEnd(), Chunks: make([]rpc.Chunk, len(pr.GetChunks()))}
		for i, c := range pr.GetChunks() {
			id, err := toID(c.GetId())
			if err != nil {
				return nil, err
			}
			r.Chunks[i] = rpc.Chunk{Offset: c.GetOffset(), Length: c.GetLength(), ID: id}
		}
		o.Ranges = append(o.Ranges, r)
	}
	return o, nil
}

func needToPB(n rpc.Need) *pb.Need {
	bm := make([]byte, (len(n.Missing)+7)/8)
	for i, m := range n.Missing {
		if m {
			bm[i/8] |= 1 << (i % 8)
		}
	}
	return &pb.Need{Missing: bm, Copied: uint32(n.Copied), Present: uint32(n.Present)}
}

func needFromPB(p *pb.Need, chunks int) (rpc.Need, error) {
	if len(p.GetMissing()) != (chunks+7)/8 {
		return rpc.Need{}, fmt.Errorf("need bitmap of %d bytes for %d chunks: %w", len(p.GetMissing()), chunks, rpc.ErrProtocol)
	}
	n := rpc.Need{Missing: make([]bool, chunks), Copied: int(p.GetCopied()), Present: int(p.GetPresent())}
	for i := range n.Missing {
		n.Missing[i] = p.GetMissing()[i/8]&(1<<(i%8)) != 0
	}
	return n, nil
}
