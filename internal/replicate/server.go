package replicate

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/internal/replpb"
	"github.com/dmsync/dmsync/rpc"
)

// Server serves the replication admin API (internal/replpb) for a Manager.
type Server struct {
	replpb.UnimplementedReplicationServer
	m *Manager
}

// Register adds the replication admin API of m to g (the daemon's admin
// gRPC server on its unix socket).
func Register(g *grpc.Server, m *Manager) {
	replpb.RegisterReplicationServer(g, &Server{m: m})
}

// toStatus maps the manager's errors to gRPC codes: the one place.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, ErrNoVolume):
		code = codes.NotFound
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrUnknownPeer):
		code = codes.InvalidArgument
	}
	return status.Error(code, err.Error())
}

// Node implements replpb.ReplicationServer.
func (s *Server) Node(context.Context, *replpb.NodeRequest) (*replpb.NodeResponse, error) {
	r := &replpb.NodeResponse{Listen: s.m.opts.Listen}
	if s.m.opts.Self != nil {
		r.Id = s.m.opts.Self.ID
	}
	return r, nil
}

// PeerAdd implements replpb.ReplicationServer.
func (s *Server) PeerAdd(_ context.Context, req *replpb.PeerAddRequest) (*replpb.PeerAddResponse, error) {
	p := req.GetPeer()
	return &replpb.PeerAddResponse{}, toStatus(s.m.AddPeer(Peer{ID: p.GetId(), Addr: p.GetAddr()}))
}

// PeerList implements replpb.ReplicationServer.
func (s *Server) PeerList(context.Context, *replpb.PeerListRequest) (*replpb.PeerListResponse, error) {
	r := &replpb.PeerListResponse{}
	for _, p := range s.m.Config().Peers {
		r.Peers = append(r.Peers, &replpb.Peer{Id: p.ID, Addr: p.Addr})
	}
	return r, nil
}

// Replicate implements replpb.ReplicationServer.
func (s *Server) Replicate(ctx context.Context, req *replpb.ReplicateRequest) (*replpb.ReplicateResponse, error) {
	src, err := s.m.Replicate(ctx, req.GetVolume(), req.GetPeer())
	if err != nil {
		return nil, toStatus(err)
	}
	return &replpb.ReplicateResponse{LogUuid: src.LogUUID, Source: src.Path, Size: src.Size}, nil
}

// Receive implements replpb.ReplicationServer.
func (s *Server) Receive(_ context.Context, req *replpb.ReceiveRequest) (*replpb.ReceiveResponse, error) {
	err := s.m.Receive(Receive{Volume: req.GetVolume(), From: req.GetFrom(), Image: req.GetImage(), Size: req.GetSize()})
	return &replpb.ReceiveResponse{}, toStatus(err)
}

// Status implements replpb.ReplicationServer.
func (s *Server) Status(context.Context, *replpb.StatusRequest) (*replpb.StatusResponse, error) {
	r := &replpb.StatusResponse{}
	for _, st := range s.m.Status() {
		r.Sends = append(r.Sends, sendStatusToPB(st))
	}
	for _, rs := range s.m.Receiving() {
		p := &replpb.ReceiveStatus{Volume: rs.Volume, From: rs.From, Image: rs.Image, Size: rs.Size}
		if rs.Err == nil {
			p.Root, p.Chunks, p.Applying = rootBytes(rs.Root.Root), rs.Root.Chunks, rs.Root.Applying
		}
		r.Receives = append(r.Receives, p)
	}
	return r, nil
}

func rootBytes(id rpc.ID) []byte {
	if id == (rpc.ID{}) {
		return nil
	}
	return id[:]
}

func sendStatusToPB(s SendStatus) *replpb.SendStatus {
	p := &replpb.SendStatus{
		Volume: s.Volume, LogUuid: s.Source.LogUUID, Peer: s.Peer, Size: s.Source.Size,
		RegionSize: s.RegionSize, PendingRegions: s.PendingRegions, BytesToGo: s.BytesToGo,
		RateBytesPerSec: s.Rate, EtaSeconds: s.ETA.Seconds(), PeerRoot: rootBytes(s.PeerRoot),
		BytesRead: s.Stats.BytesRead, BytesSent: s.Stats.BytesSent, Batches: uint64(s.Stats.Batches),
		Failures: uint64(s.Stats.Failures), State: s.State,
	}
	if !s.LastAck.IsZero() {
		p.LastAckUnixNano = s.LastAck.UnixNano()
	}
	return p
}

// Wait implements replpb.ReplicationServer.
func (s *Server) Wait(ctx context.Context, req *replpb.WaitRequest) (*replpb.WaitResponse, error) {
	if t := time.Duration(req.GetTimeoutNano()); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	st, err := s.m.Wait(ctx, req.GetVolume())
	if errors.Is(err, context.DeadlineExceeded) {
		return &replpb.WaitResponse{Done: false, Status: sendStatusToPB(st)}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &replpb.WaitResponse{Done: true, Status: sendStatusToPB(st)}, nil
}

// Verify implements replpb.ReplicationServer.
func (s *Server) Verify(ctx context.Context, req *replpb.VerifyRequest) (*replpb.VerifyResponse, error) {
	v, err := s.m.Verify(ctx, req.GetVolume())
	if err != nil {
		return nil, toStatus(err)
	}
	r := &replpb.VerifyResponse{
		SourceRoot: v.Source.Root[:], ReplicaRoot: v.Replica.Root[:],
		SourceChunks: v.Source.Chunks, ReplicaChunks: v.Replica.Chunks,
		Equal: v.Equal, ReplicaApplying: v.Replica.Applying,
	}
	for _, d := range v.Differ {
		r.Differ = append(r.Differ, &replpb.ByteRange{Offset: d.Off, Length: d.Len})
	}
	return r, nil
}
