package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// VolumeRepairer is a VolumeManager that can also repair volumes whose
// leg failed (dmsyncd's leg watcher, dmtarget.Legs).
type VolumeRepairer interface {
	Repair(ctx context.Context, req dmtarget.RepairRequest) (dmtarget.LegFailure, error)
}

// VolumeRepair implements adminpb.VolumesServer.
func (s *Server) VolumeRepair(ctx context.Context, req *adminpb.VolumeRepairRequest) (*adminpb.VolumeRepairResponse, error) {
	r, ok := s.vm.(VolumeRepairer)
	if !ok {
		return nil, ToStatus(fmt.Errorf("%w: this dmsyncd does not repair volumes (device-mapper is not available here)", ErrUnsupported))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := r.Repair(ctx, dmtarget.RepairRequest{Name: req.GetName(), Mirror: req.GetMirror(), Data: req.GetData()})
	if err != nil {
		s.log.Warn("volume repair refused", "volume", req.GetName(), "err", err)
		return nil, ToStatus(err)
	}
	return &adminpb.VolumeRepairResponse{Failure: LegFailureToPB(&rec)}, nil
}

// LegFailureToPB converts a leg failure record (nil gives nil).
func LegFailureToPB(f *dmtarget.LegFailure) *adminpb.LegFailure {
	if f == nil {
		return nil
	}
	return &adminpb.LegFailure{
		State: string(f.State), FailedLeg: int32(f.FailedLeg), FailedDev: f.FailedName(), Health: f.Health,
		At: f.At.UTC().Format(time.RFC3339), Survivor: f.Survivor, NeedsFullResync: f.NeedsFullResync,
		OutOfSync: f.OutOfSync, RepairDev: f.RepairDev, OneDisk: f.OneDisk, Summary: f.Summary(), Note: f.Note,
	}
}
