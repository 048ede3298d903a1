package replicate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
	"github.com/dmsync/dmsync/rpc"
)

// Server serves the Replication service of the admin API (internal/adminpb)
// for a Manager. Errors become gRPC codes through admin.ToStatus only.
type Server struct {
	adminpb.UnimplementedReplicationServer
	m *Manager

	mu   sync.Mutex
	last map[string]adminpb.SendState // the last specific state of each send
}

// Register adds the replication admin API of m to g (the daemon's admin
// gRPC server on its unix socket).
func Register(g *grpc.Server, m *Manager) {
	adminpb.RegisterReplicationServer(g, &Server{m: m})
}

// Node implements adminpb.ReplicationServer.
func (s *Server) Node(context.Context, *adminpb.NodeRequest) (*adminpb.NodeResponse, error) {
	r := &adminpb.NodeResponse{Listen: s.m.opts.Listen}
	if s.m.opts.Self != nil {
		r.Id = s.m.opts.Self.ID
	}
	return r, nil
}

// PeerAdd implements adminpb.ReplicationServer.
func (s *Server) PeerAdd(_ context.Context, req *adminpb.PeerAddRequest) (*adminpb.PeerAddResponse, error) {
	p := req.GetPeer()
	return &adminpb.PeerAddResponse{}, admin.ToStatus(s.m.AddPeer(Peer{ID: p.GetId(), Addr: p.GetAddr()}))
}

// PeerList implements adminpb.ReplicationServer.
func (s *Server) PeerList(context.Context, *adminpb.PeerListRequest) (*adminpb.PeerListResponse, error) {
	r := &adminpb.PeerListResponse{}
	for _, p := range s.m.Config().Peers {
		r.Peers = append(r.Peers, &adminpb.Peer{Id: p.ID, Addr: p.Addr})
	}
	return r, nil
}

// Replicate implements adminpb.ReplicationServer.
func (s *Server) Replicate(ctx context.Context, req *adminpb.ReplicateRequest) (*adminpb.ReplicateResponse, error) {
	if req.GetPointIntervalNano() < 0 {
		return nil, admin.ToStatus(fmt.Errorf("%w: point interval %s is negative", ErrInvalid, time.Duration(req.GetPointIntervalNano())))
	}
	src, err := s.m.ReplicateSend(ctx, Send{Volume: req.GetVolume(), Peer: req.GetPeer(), As: req.GetAs(), PointInterval: Duration(req.GetPointIntervalNano()), Chunking: req.GetChunking()})
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	name := req.GetAs()
	if name == "" {
		name = req.GetVolume()
	}
	return &adminpb.ReplicateResponse{LogUuid: src.LogUUID, Source: src.Path, Size: src.Size, Name: name}, nil
}

// Receive implements adminpb.ReplicationServer.
func (s *Server) Receive(_ context.Context, req *adminpb.ReceiveRequest) (*adminpb.ReceiveResponse, error) {
	size, changed, err := s.m.ReceiveVolume(Receive{Volume: req.GetVolume(), From: req.GetFrom(), Image: req.GetImage(), Size: req.GetSize()}, req.GetForce())
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	return &adminpb.ReceiveResponse{Size: size, Changed: changed}, nil
}

// Status implements adminpb.ReplicationServer.
func (s *Server) Status(context.Context, *adminpb.StatusRequest) (*adminpb.StatusResponse, error) {
	r := &adminpb.StatusResponse{}
	for _, st := range s.m.Status() {
		r.Sends = append(r.Sends, s.sendStatusToPB(st))
	}
	for _, rs := range s.m.Receiving() {
		p := &adminpb.ReceiveStatus{Volume: rs.Volume, From: rs.From, Image: rs.Image, Size: rs.Size}
		if rs.Err == nil {
			p.Root, p.Chunks, p.Applying = rootBytes(rs.Root.Root), rs.Root.Chunks, rs.Root.Applying
			if pt := rs.Root.Point; pt.Seq > 0 {
				p.PointSeq, p.PointTakenAtUnixNano, p.PointAppliedAtUnixNano = pt.Seq, pt.TakenAt.UnixNano(), pt.AppliedAt.UnixNano()
			}
		} else if err := s.m.ReceiveError(rs.Volume); err != nil {
			p.Error = err.Error()
		} else {
			p.Error = rs.Err.Error()
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

func (srv *Server) sendStatusToPB(s SendStatus) *adminpb.SendStatus {
	p := &adminpb.SendStatus{
		Volume: s.Volume, LogUuid: s.Source.LogUUID, Peer: s.Peer, Size: s.Source.Size,
		RegionSize: s.RegionSize, PendingRegions: s.PendingRegions, BytesToGo: s.BytesToGo,
		RateBytesPerSec: s.Rate, EtaSeconds: s.ETA.Seconds(), PeerRoot: rootBytes(s.PeerRoot),
		BytesRead: s.Stats.BytesRead, BytesSent: s.Stats.BytesSent, Batches: uint64(s.Stats.Batches),
		Failures: uint64(s.Stats.Failures), State: s.State, StateCode: srv.state(s),
	}
	if !s.LastAck.IsZero() {
		p.LastAckUnixNano = s.LastAck.UnixNano()
	}
	p.Name = srv.m.wireName(s.Send, s.Source)
	if read, total, ok := srv.m.VerifyProgress(s.Volume); ok {
		p.VerifyBytesRead, p.VerifyBytesTotal = read, total
	}
	p.Point = pointToPB(s.Points, s.Send.PointInterval.D())
	return p
}

// Wait implements adminpb.ReplicationServer.
func (s *Server) Wait(ctx context.Context, req *adminpb.WaitRequest) (*adminpb.WaitResponse, error) {
	if t := time.Duration(req.GetTimeoutNano()); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	st, err := s.m.Wait(ctx, req.GetVolume())
	if errors.Is(err, context.DeadlineExceeded) {
		return &adminpb.WaitResponse{Done: false, Status: s.sendStatusToPB(st)}, nil
	}
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	return &adminpb.WaitResponse{Done: true, Status: s.sendStatusToPB(st)}, nil
}

// Verify implements adminpb.ReplicationServer.
func (s *Server) Verify(ctx context.Context, req *adminpb.VerifyRequest) (*adminpb.VerifyResponse, error) {
	v, err := s.m.Verify(ctx, req.GetVolume(), VerifyOptions{Repair: req.GetRepair(), Rate: req.GetRate(), Index: req.GetIndex()})
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	r := &adminpb.VerifyResponse{
		Equal: v.Equal, ReplicaApplying: v.Applying,
		IndexChecked: v.IndexChecked, IndexEqual: v.IndexEqual,
		ScrubbedBytes: v.Scrubbed, ScrubNanos: int64(v.ScrubTime),
		RepairedRegions: uint64(len(v.Repaired)), RegionSize: v.RegionSize,
	}
	if v.IndexChecked {
		r.SourceRoot, r.ReplicaRoot = v.Source.Root[:], v.Replica.Root[:]
		r.SourceChunks, r.ReplicaChunks = v.Source.Chunks, v.Replica.Chunks
	}
	for _, d := range v.Differ {
		r.Differ = append(r.Differ, &adminpb.ByteRange{Offset: d.Off, Length: d.Len})
	}
	for _, d := range v.IndexDiffer {
		r.IndexDiffer = append(r.IndexDiffer, &adminpb.ByteRange{Offset: d.Off, Length: d.Len})
	}
	return r, nil
}

// PeerRemove implements adminpb.ReplicationServer.
func (s *Server) PeerRemove(_ context.Context, req *adminpb.PeerRemoveRequest) (*adminpb.PeerRemoveResponse, error) {
	sends, recvs, err := s.m.RemovePeer(req.GetId(), req.GetForce())
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	return &adminpb.PeerRemoveResponse{StoppedSends: sends, RemovedReceives: recvs}, nil
}

// ReplicateStop implements adminpb.ReplicationServer.
func (s *Server) ReplicateStop(_ context.Context, req *adminpb.ReplicateStopRequest) (*adminpb.ReplicateStopResponse, error) {
	send, err := s.m.StopSend(req.GetVolume())
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	return &adminpb.ReplicateStopResponse{Peer: send.Peer}, nil
}

// ReceiveRemove implements adminpb.ReplicationServer.
func (s *Server) ReceiveRemove(_ context.Context, req *adminpb.ReceiveRemoveRequest) (*adminpb.ReceiveRemoveResponse, error) {
	r, err := s.m.RemoveReceive(req.GetVolume())
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	return &adminpb.ReceiveRemoveResponse{Image: r.Image, From: r.From}, nil
}

// Resync implements adminpb.ReplicationServer.
func (s *Server) Resync(ctx context.Context, req *adminpb.ResyncRequest) (*adminpb.ResyncResponse, error) {
	n, err := s.m.Resync(ctx, req.GetVolume())
	if err != nil {
		return nil, admin.ToStatus(err)
	}
	r := &adminpb.ResyncResponse{Regions: n}
	for _, st := range s.m.Status() {
		if st.Volume == req.GetVolume() {
			r.Bytes = st.BytesToGo
		}
	}
	return r, nil
}

// state classifies a send; a failure the sender describes only by its
// count keeps the kind of the last failure it described.
func (srv *Server) state(s SendStatus) adminpb.SendState {
	st := classifySend(s)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.last == nil {
		srv.last = map[string]adminpb.SendState{}
	}
	if st == adminpb.SendState_SEND_STATE_FAILING && strings.Contains(s.State, "failed attempts in this pass") {
		if prev, ok := srv.last[s.Volume]; ok && sendProblemState(prev) {
			return prev
		}
	}
	srv.last[s.Volume] = st
	return st
}

func sendProblemState(s adminpb.SendState) bool {
	switch s {
	case adminpb.SendState_SEND_STATE_PEER_UNREACHABLE, adminpb.SendState_SEND_STATE_REFUSED,
		adminpb.SendState_SEND_STATE_PEER_FULL, adminpb.SendState_SEND_STATE_STORE_FAILED:
		return true
	}
	return false
}
