package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/debug"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
)

// addLegs makes the failed-leg watcher (dmtarget.Legs) and returns vm
// with repair added and the watcher as a service. Without device-mapper it
// returns vm unchanged and no service. Its records live in STATE_DIR/legs,
// apart from the dirty log's store.
//
// The watcher runs in the replicator process, next to the admin API that
// serves `dmsync volume repair`; the supervisor restarts the replicator
// within seconds if it dies. A leg that fails writes holds the mirror's
// I/O until it is reconfigured, so the watcher would be safer still in the
// log server process: that is the next step.
// Its events go to the event hub (ops.legEvent).
func (r *replicator) addLegs(vm admin.VolumeManager) (admin.VolumeManager, *service) {
	b, ok := vm.(*dmtarget.Builder)
	if !ok {
		return vm, nil
	}
	recs := &dmtarget.FileRecords{Dir: filepath.Join(r.cfg.stateDir, "legs")}
	b.Records = recs
	legs := &dmtarget.Legs{Builder: b, Records: recs, Logger: r.log.With("component", "legs"), PendAll: r.lc.PendAll,
		OnEvent: r.ops.legEvent}
	svc := &service{"leg watcher", func(ctx context.Context) (err error) {
		// A bug in the watcher must not take the rest down with it.
		defer func() {
			if p := recover(); p != nil {
				r.log.Error("leg watcher panicked; failed legs are not handled until it restarts", "panic", p, "stack", string(debug.Stack()))
				err = fmt.Errorf("leg watcher panicked: %v", p)
			}
		}()
		if err := legs.Run(ctx); err != nil {
			return fmt.Errorf("leg watcher: %w", err)
		}
		return nil
	}}
	return repairingVM{b, legs}, svc
}

// repairingVM is the volume manager with repair (admin.VolumeRepairer).
type repairingVM struct {
	*dmtarget.Builder
	legs *dmtarget.Legs
}

var _ admin.VolumeRepairer = repairingVM{}

func (r repairingVM) Repair(ctx context.Context, req dmtarget.RepairRequest) (dmtarget.LegFailure, error) {
	return r.legs.Repair(ctx, req)
}
