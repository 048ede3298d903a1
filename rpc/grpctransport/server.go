// Package grpctransport carries rpc's replication protocol over gRPC with
// mutual TLS 1.3, peers pinned by node id (package internal/identity).
//
// Every peer is bounded on the receiver: connections (total and per peer
// id), streams per connection, handshake time, message size and the work
// served at once. limits.go documents them and the receiver's memory
// bound: about 1.7 GiB with the defaults, whatever the peers send
// (plus Root and TreeNodes requests' chunk lists until the replica's tree
// is kept incrementally).
package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// NewServer returns a gRPC server serving recv. The TLS handshake admits
// only senders some volume lists (Receiver.KnownSender); each batch is
// checked again against its volume's allowlist. An optional Liveness
// replaces DefaultLiveness (keepalive, handshake, stream and stall bounds,
// and the connection and work Limits: limits.go, with the memory bound).
func NewServer(self *identity.Identity, recv *rpc.Receiver, log *slog.Logger, live ...Liveness) *grpc.Server {
	var l Liveness
	if len(live) > 0 {
		l = live[0]
	}
	l = l.withDefaults()
	// Connection and work bounds (limits.go); a request waits for a slot
	// for at most half the stall bound, so the sender hears why.
	lim := newLimiter(l.Limits, l.Stall/2, log)
	creds := lim.creds(withRecords(credentials.NewTLS(identity.ServerConfig(self, recv.KnownSender, log))))
	// WaitForHandlers: Stop returns only once no handler touches the
	// receiver's store or images any more. ReadBufferSize(0): gRPC reads
	// frames straight from TLS, whose own reads are buffered below it
	// (records.go), instead of copying every byte through a second buffer.
	opts := append([]grpc.ServerOption{grpc.Creds(creds), grpc.MaxRecvMsgSize(max(recv.MaxOfferBytes(), minMsg)), grpc.WaitForHandlers(true), grpc.WriteBufferSize(grpcWriteBuf), grpc.ReadBufferSize(0), experimental.BufferPool(sharedPool), grpc.ForceServerCodecV2(codec{})},
		append(l.serverOptions(), lim.options()...)...)
	s := grpc.NewServer(opts...)
	pb.RegisterReplicaServer(s, &server{recv: recv, log: log, stall: l.Stall})
	return s
}

// maxMsg bounds a message the client sends or receives. The server takes
// no message larger than its receiver's MaxOfferBytes (at least minMsg,
// room for a data run), checked by gRPC before decoding.
const (
	maxMsg = 64 << 20
	minMsg = 1 << 20
)

type server struct {
	pb.UnimplementedReplicaServer
	recv  *rpc.Receiver
	log   *slog.Logger
	stall time.Duration // a batch stream silent this long is aborted
}

func peerID(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", fmt.Errorf("no peer in context: %w", rpc.ErrPermission)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", fmt.Errorf("connection is not TLS: %w", rpc.ErrPermission)
	}
	return identity.PeerID(ti.State)
}

func (s *server) Root(ctx context.Context, req *pb.RootRequest) (*pb.RootResponse, error) {
	id, err := peerID(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	info, err := s.recv.Root(id, req.GetVolume())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.RootResponse{Root: info.Root[:], Chunks: info.Chunks, VolumeSize: info.VolumeSize, Applying: info.Applying, Point: pointToPB(info.Point)}, nil
}

func (s *server) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	id, err := peerID(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	c, err := s.recv.CommitPoint(ctx, id, rpc.Commit{Volume: req.GetVolume(), Point: req.GetPoint(), Batches: int(req.GetBatches()), TakenAt: time.Unix(0, req.GetTakenAtUnixNano())})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CommitResponse{Point: pointToPB(c.Point), Root: c.Root[:], Chunks: c.Chunks}, nil
}

func (s *server) TreeNodes(ctx context.Context, req *pb.TreeNodesRequest) (*pb.TreeNodesResponse, error) {
	id, err := peerID(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	tree, err := s.recv.Tree(id, req.GetVolume())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.TreeNodesResponse{Height: uint32(tree.Height())}
	k := int(req.GetLevel())
	if k >= tree.Height() {
		return resp, nil
	}
	ranges := make([]blockhash.Range, len(req.GetRanges()))
	for i, r := range req.GetRanges() {
		ranges[i] = blockhash.Range{Off: r.GetOffset(), Len: r.GetLength()}
	}
	for _, n := range tree.Nodes(k, ranges) {
		resp.Nodes = append(resp.Nodes, &pb.TreeNode{Offset: n.Offset, Length: n.Length, Hash: n.Hash[:], First: uint32(n.First), Count: uint32(n.Count)})
	}
	return resp, nil
}

func (s *server) Apply(stream pb.Replica_ApplyServer) error {
	return toStatus(s.apply(stream))
}

func (s *server) apply(stream pb.Replica_ApplyServer) error {
	ctx := stream.Context()
	id, err := peerID(ctx)
	if err != nil {
		return err
	}
	// A sender that goes silent mid-batch must not hold the batch's
	// ranges: every Recv is bounded by the stall duration.
	rx := newStallReader(stream, s.stall)
	defer rx.close()
	// The received buffers the batch's Data bytes alias go back to the
	// pool once the batch is done with them: after Commit, or the Abort
	// deferred below (both wait for the batch's writes).
	var held []mem.Buffer
	defer func() {
		for _, buf := range held {
			buf.Free()
		}
	}()
	in, err := rx.next()
	if err != nil {
		return err
	}
	po := in.req.GetOffer()
	if po == nil {
		return fmt.Errorf("first message is not an offer: %w", rpc.ErrProtocol)
	}
	offer, err := offerFromPB(po)
	if err != nil {
		return err
	}
	b, need, err := s.recv.Begin(ctx, id, offer)
	if err != nil {
		return err
	}
	defer b.Abort() // no-op after Commit
	if err := stream.Send(&pb.ApplyResponse{Msg: &pb.ApplyResponse_Need{Need: needToPB(need)}}); err != nil {
		return err
	}
	for {
		in, err := rx.next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("stream closed before done: %w", rpc.ErrProtocol)
		}
		if err != nil {
			return err
		}
		if in.buf != nil {
			held = append(held, in.buf)
		}
		switch m := in.req.Msg.(type) {
		case *pb.ApplyRequest_Data:
			put := b.Put
			if m.Data.GetPartial() {
				put = b.PutBlocks
			}
			if err := put(m.Data.GetIndex(), m.Data.GetData()); err != nil {
				s.log.Warn("refused chunk", "volume", offer.Volume, "peer", id, "err", err)
				return err
			}
		case *pb.ApplyRequest_Done:
			if retry := b.Retry(); len(retry) > 0 {
				// Patched chunks that did not verify: ask for them whole.
				missing := make([]bool, offer.NumChunks())
				for _, i := range retry {
					missing[i] = true
				}
				if err := stream.Send(&pb.ApplyResponse{Msg: &pb.ApplyResponse_Need{Need: &pb.Need{Missing: toBitmap(missing)}}}); err != nil {
					return err
				}
				continue
			}
			ack, err := b.Commit(m.Done.GetWantRoot())
			if err != nil {
				return err
			}
			pa := &pb.Ack{}
			if ack.HasRoot {
				pa.Root, pa.Chunks = ack.Root[:], ack.Chunks
			}
			return stream.Send(&pb.ApplyResponse{Msg: &pb.ApplyResponse_Ack{Ack: pa}})
		default:
			return fmt.Errorf("unexpected %T after the offer: %w", in.req.Msg, rpc.ErrProtocol)
		}
	}
}
