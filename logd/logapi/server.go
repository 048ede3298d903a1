package logapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/logpb"
)

// Log is what the log server offers the replicator: *logd.Server.
type Log interface {
	logd.Replicator
	PendAll(uuid string) error
	PendRegions(uuid string, regions []uint64) error
	Stats() logd.Stats
}

var _ Log = (*logd.Server)(nil)

// Options configure a Server.
type Options struct {
	// Log is the dirty log served.
	Log Log
	// Health reports the daemon's health (required).
	Health func() *logpb.HealthResponse
	// Report receives the replicator's problem reports (may be nil).
	Report func(*logpb.ReportRequest)
	// Freezer suspends and resumes the devices on top of a volume for
	// consistency points (may be nil: Freeze and Thaw then fail with
	// ErrFreezeUnavailable).
	Freezer Freezer
}

// Freezer freezes a volume's top devices (see FreezeRequest in
// logpb/log.proto). *Client implements it too.
type Freezer interface {
	// Freeze suspends the dm devices stacked on the mirror of the volume
	// whose log uuid is uuid, top-down, flushing; with fsfreeze also the
	// file system on the top device. They are resumed by themselves after
	// maxPause (0: DefaultMaxPause, at most MaxPause).
	Freeze(ctx context.Context, uuid string, maxPause time.Duration, fsfreeze bool) (Freeze, error)
	// Thaw resumes the devices of the freeze token names and reports
	// whether they stayed suspended from Freeze until now, and the pause.
	Thaw(ctx context.Context, uuid string, token uint64) (held bool, pause time.Duration, err error)
}

// Server implements logpb.LogServer and logpb.DaemonServer.
type Server struct {
	logpb.UnimplementedLogServer
	o Options
}

// NewServer returns a server for o.
func NewServer(o Options) *Server { return &Server{o: o} }

// Register registers the Log service of s on g.
func Register(g *grpc.Server, s *Server) { logpb.RegisterLogServer(g, s) }

// RegisterDaemon registers a Daemon service answering Health with health
// on g (the admin socket's server).
func RegisterDaemon(g *grpc.Server, health func(context.Context) (*logpb.HealthResponse, error)) {
	logpb.RegisterDaemonServer(g, daemonServer{health: health})
}

type daemonServer struct {
	logpb.UnimplementedDaemonServer
	health func(context.Context) (*logpb.HealthResponse, error)
}

func (d daemonServer) Health(ctx context.Context, _ *logpb.HealthRequest) (*logpb.HealthResponse, error) {
	return d.health(ctx)
}

// toStatus maps the log's errors to gRPC codes; Client maps them back.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, logd.ErrUnknownVolume):
		code = codes.NotFound
	case errors.Is(err, logd.ErrRegionRange):
		code = codes.OutOfRange
	case errors.Is(err, logd.ErrStore):
		code = codes.FailedPrecondition
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// Volumes implements logpb.LogServer.
func (s *Server) Volumes(context.Context, *logpb.VolumesRequest) (*logpb.VolumesResponse, error) {
	return &logpb.VolumesResponse{Uuids: s.o.Log.Volumes()}, nil
}

// RegionSize implements logpb.LogServer.
func (s *Server) RegionSize(_ context.Context, r *logpb.VolumeRequest) (*logpb.RegionSizeResponse, error) {
	size, n, err := s.o.Log.RegionSize(r.GetUuid())
	if err != nil {
		return nil, toStatus(err)
	}
	return &logpb.RegionSizeResponse{Size: size, Count: n}, nil
}

// Pending implements logpb.LogServer.
func (s *Server) Pending(_ context.Context, r *logpb.VolumeRequest) (*logpb.PendingResponse, error) {
	p, err := s.o.Log.Pending(r.GetUuid())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &logpb.PendingResponse{Regions: make([]uint64, len(p)), Gens: make([]uint64, len(p))}
	for i, x := range p {
		out.Regions[i], out.Gens[i] = x.Region, x.Gen
	}
	return out, nil
}

// Quiet implements logpb.LogServer.
func (s *Server) Quiet(_ context.Context, r *logpb.QuietRequest) (*logpb.QuietResponse, error) {
	q, err := s.o.Log.Quiet(r.GetUuid(), r.GetRegion())
	if err != nil {
		return nil, toStatus(err)
	}
	return &logpb.QuietResponse{Quiet: q}, nil
}

// Replicated implements logpb.LogServer.
func (s *Server) Replicated(_ context.Context, r *logpb.ReplicatedRequest) (*logpb.ReplicatedResponse, error) {
	if len(r.GetRegions()) != len(r.GetGens()) {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("replicated: %d regions but %d generations", len(r.GetRegions()), len(r.GetGens())))
	}
	p := make([]logd.PendingRegion, len(r.GetRegions()))
	for i := range p {
		p[i] = logd.PendingRegion{Region: r.GetRegions()[i], Gen: r.GetGens()[i]}
	}
	n, err := s.o.Log.Replicated(r.GetUuid(), p)
	return &logpb.ReplicatedResponse{Removed: uint64(n)}, toStatus(err)
}

// PendAll implements logpb.LogServer.
func (s *Server) PendAll(_ context.Context, r *logpb.VolumeRequest) (*logpb.PendAllResponse, error) {
	return &logpb.PendAllResponse{}, toStatus(s.o.Log.PendAll(r.GetUuid()))
}

// PendRegions implements logpb.LogServer.
func (s *Server) PendRegions(_ context.Context, r *logpb.PendRegionsRequest) (*logpb.PendRegionsResponse, error) {
	return &logpb.PendRegionsResponse{}, toStatus(s.o.Log.PendRegions(r.GetUuid(), r.GetRegions()))
}

// Changes implements logpb.LogServer.
func (s *Server) Changes(_ *logpb.ChangesRequest, stream grpc.ServerStreamingServer[logpb.ChangesResponse]) error {
	ch := s.o.Log.Changes(stream.Context())
	// Headers tell the client the subscription is in place.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for uuid := range ch {
		if err := stream.Send(&logpb.ChangesResponse{Uuid: uuid}); err != nil {
			return err
		}
	}
	return nil
}

// Report implements logpb.LogServer.
func (s *Server) Report(_ context.Context, r *logpb.ReportRequest) (*logpb.ReportResponse, error) {
	if s.o.Report != nil {
		s.o.Report(r)
	}
	return &logpb.ReportResponse{}, nil
}

// Health implements logpb.LogServer.
func (s *Server) Health(context.Context, *logpb.HealthRequest) (*logpb.HealthResponse, error) {
	return s.o.Health(), nil
}

// Stats implements logpb.LogServer.
func (s *Server) Stats(context.Context, *logpb.StatsRequest) (*logpb.StatsResponse, error) {
	b, err := json.Marshal(s.o.Log.Stats())
	if err != nil {
		return nil, toStatus(fmt.Errorf("encode log stats: %w", err))
	}
	return &logpb.StatsResponse{Json: b}, nil
}
