package admin

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// DefaultSocket is where dmsyncd listens and the CLI dials.
const DefaultSocket = "/run/dmsync/dmsync.sock"

// VolumeManager is what the server needs of dmtarget: *dmtarget.Builder.
type VolumeManager interface {
	Plan(ctx context.Context, spec dmtarget.VolumeSpec) (*dmtarget.Plan, error)
	Apply(ctx context.Context, p *dmtarget.Plan) error
	Find(ctx context.Context, name string) (dmtarget.Volume, error)
	List(ctx context.Context) ([]dmtarget.Volume, error)
	Status(ctx context.Context, name string) (dmtarget.VolumeStatus, error)
	Remove(ctx context.Context, name string) error
}

var _ VolumeManager = (*dmtarget.Builder)(nil)

// Server implements adminpb.VolumesServer over a VolumeManager. Volume
// changes are serialised.
type Server struct {
	adminpb.UnimplementedVolumesServer
	vm  VolumeManager
	log *slog.Logger
	mu  sync.Mutex // serialises create and remove
}

// NewServer returns a server; log may be nil.
func NewServer(vm VolumeManager, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{vm: vm, log: log}
}

// Register registers srv on g.
func Register(g *grpc.Server, srv *Server) { adminpb.RegisterVolumesServer(g, srv) }

// VolumeCreate implements adminpb.VolumesServer.
func (s *Server) VolumeCreate(ctx context.Context, req *adminpb.VolumeCreateRequest) (*adminpb.VolumeCreateResponse, error) {
	sp := req.GetSpec()
	spec := dmtarget.VolumeSpec{
		Name: sp.GetName(), Data: sp.GetData(), Mirror: sp.GetMirror(), RegionSize: sp.GetRegionSize(),
		Crypt: sp.GetCrypt(), KeyFile: sp.GetKeyFile(), Log: sp.GetLogType(),
	}
	if spec.KeyFile != "" && !filepath.IsAbs(spec.KeyFile) {
		return nil, ToStatus(Errorf(ErrInvalid, "key file %s is a relative path: the daemon needs an absolute one", spec.KeyFile))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.vm.Plan(ctx, spec)
	if err != nil {
		return nil, ToStatus(err)
	}
	resp := &adminpb.VolumeCreateResponse{Commands: p.Commands()}
	if req.GetDryRun() {
		return resp, nil
	}
	if err := s.vm.Apply(ctx, p); err != nil {
		s.log.Error("volume create failed", "volume", spec.Name, "err", err)
		return nil, ToStatus(err)
	}
	v, err := s.vm.Find(ctx, spec.Name)
	if err != nil {
		return nil, ToStatus(err)
	}
	resp.Volume = volumeToPB(v)
	return resp, nil
}

// VolumeRemove implements adminpb.VolumesServer.
func (s *Server) VolumeRemove(ctx context.Context, req *adminpb.VolumeRemoveRequest) (*adminpb.VolumeRemoveResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vm.Find(ctx, req.GetName())
	if err != nil {
		return nil, ToStatus(err)
	}
	if err := s.vm.Remove(ctx, req.GetName()); err != nil {
		return nil, ToStatus(err)
	}
	return &adminpb.VolumeRemoveResponse{Removed: v.Devices}, nil
}

// VolumeList implements adminpb.VolumesServer.
func (s *Server) VolumeList(ctx context.Context, req *adminpb.VolumeListRequest) (*adminpb.VolumeListResponse, error) {
	vs, err := s.vm.List(ctx)
	if err != nil {
		return nil, ToStatus(err)
	}
	resp := &adminpb.VolumeListResponse{}
	for _, v := range vs {
		resp.Volumes = append(resp.Volumes, volumeToPB(v))
	}
	return resp, nil
}

// VolumeStatus implements adminpb.VolumesServer.
func (s *Server) VolumeStatus(ctx context.Context, req *adminpb.VolumeStatusRequest) (*adminpb.VolumeStatusResponse, error) {
	st, err := s.vm.Status(ctx, req.GetName())
	if err != nil {
		return nil, ToStatus(err)
	}
	resp := &adminpb.VolumeStatusResponse{
		Volume: volumeToPB(st.Volume), Regions: st.Mirror.Regions, InSync: st.Mirror.InSync,
		LogHealth: st.Mirror.LogHealth, OpenCount: st.OpenCount, Suspended: st.Suspended, EventNr: st.EventNr,
		Failure: LegFailureToPB(st.Failure),
	}
	if st.Mirror.HasReplicationPending {
		p := st.Mirror.ReplicationPending
		resp.ReplicationPending = &p
	}
	for _, l := range st.Mirror.Legs {
		resp.Legs = append(resp.Legs, &adminpb.Leg{Dev: l.Dev, Health: string(l.Health)})
	}
	return resp, nil
}

func volumeToPB(v dmtarget.Volume) *adminpb.Volume {
	return &adminpb.Volume{
		Name: v.Name, Mirror: v.Mirror, Crypt: v.Crypt, LogType: v.LogType, LogUuid: v.LogUUID,
		OneDisk: v.OneDisk, Legs: v.Legs, Sectors: v.Sectors, RegionSectors: v.RegionSectors,
		Devices: v.Devices, Managed: v.Managed,
	}
}
