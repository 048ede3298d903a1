// Package grpctransport carries rpc's replication protocol over gRPC with
// mutual TLS 1.3, peers pinned by node id (package internal/identity).
package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// NewServer returns a gRPC server serving recv. The TLS handshake admits
// only senders some volume lists (Receiver.KnownSender); each batch is
// checked again against its volume's allowlist.
func NewServer(self *identity.Identity, recv *rpc.Receiver, log *slog.Logger) *grpc.Server {
	creds := credentials.NewTLS(identity.ServerConfig(self, recv.KnownSender, log))
	// WaitForHandlers: Stop returns only once no handler touches the
	// receiver's store or images any more.
	s := grpc.NewServer(grpc.Creds(creds), grpc.MaxRecvMsgSize(maxMsg), grpc.WaitForHandlers(true))
	pb.RegisterReplicaServer(s, &server{recv: recv, log: log})
	return s
}

// maxMsg bounds a message: an offer lists up to MaxChunks chunks.
const maxMsg = 64 << 20

type server struct {
	pb.UnimplementedReplicaServer
	recv *rpc.Receiver
	log  *slog.Logger
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
	return &pb.RootResponse{Root: info.Root[:], Chunks: info.Chunks, VolumeSize: info.VolumeSize, Applying: info.Applying, MerkleRoot: info.MerkleRoot[:]}, nil
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
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	po := req.GetOffer()
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
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("stream closed before done: %w", rpc.ErrProtocol)
		}
		if err != nil {
			return err
		}
		switch m := req.Msg.(type) {
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
			return fmt.Errorf("unexpected %T after the offer: %w", req.Msg, rpc.ErrProtocol)
		}
	}
}
