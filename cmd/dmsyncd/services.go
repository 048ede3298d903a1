package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/internal/replicate"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/logapi"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
)

// service is something the replicator runs, such as the replication
// manager. It runs until ctx is done; a failure is reported and the
// service alone is started again (see replicator.runService).
type service struct {
	name string
	run  func(ctx context.Context) error
}

// addServices registers the admin API (volumes always; replication when
// config.json, the node key and the replica store load) on g and returns
// the services to run. An error means replication is off, and says why;
// the services returned with it (the leg watcher) still run.
func (r *replicator) addServices(g *grpc.Server, store *pebble.DB) ([]service, error) {
	dm, dmErr := dmtarget.Open(dmtarget.Options{Logger: r.log})
	var vm admin.VolumeManager = unavailableDM{dmErr}
	if dmErr != nil {
		r.log.Warn("device-mapper not available: volume commands will fail; receiving still works", "err", dmErr)
	} else {
		vm = &dmtarget.Builder{DM: dm, Host: dmtarget.SystemHost{}, Logger: r.log.With("component", "dmtarget"), DaemonSocket: r.cfg.adminSocket}
	}
	vm, legs := r.addLegs(vm) // the failed-leg watcher (legs.go)
	admin.Register(g, admin.NewServer(vm, r.log.With("component", "admin")))
	var svcs []service
	if legs != nil {
		svcs = append(svcs, *legs)
	}

	self, err := r.buildCheck(store)
	if err != nil {
		return svcs, err
	}
	repl, err := replicate.New(replicate.Options{
		StateDir: r.cfg.stateDir, Listen: r.cfg.listen, Self: self, Log: r.lc,
		Store: pebble.NewReplicaStore(store.Raw()), Chunking: r.cfg.chunking, ScrubRate: r.cfg.scrubRate << 20,
		Logger: r.log.With("component", "replicate"),
		Resolve: func(ctx context.Context, name string) (replicate.Source, error) {
			return resolve(ctx, dm, dmErr, name)
		},
		Freezer: r.freezer,
	})
	if err != nil {
		return svcs, err
	}
	var selfID string
	if self != nil {
		selfID = self.ID
	}
	var dmc *dmtarget.Control
	if dmErr == nil {
		dmc = dm
	}
	svcs = append(svcs, r.ops.start(repl, dmc, selfID, r.lc)...)
	replicate.Register(g, repl)
	return append(svcs,
		service{"replication", repl.Run},
		service{"replication problems", func(ctx context.Context) error { return r.watchProblems(ctx, repl) }},
	), nil
}

// buildCheck loads what replication needs besides the dirty log: the
// replica store, the node identity (none is not an error: replication is
// off until `dmsync init`) and config.json.
func (r *replicator) buildCheck(store *pebble.DB) (*identity.Identity, error) {
	if store == nil {
		return nil, fmt.Errorf("the replica store in %s did not open (see the log)", filepath.Join(r.cfg.stateDir, replicaDir))
	}
	self, err := identity.Load(r.cfg.stateDir)
	if errors.Is(err, identity.ErrNoIdentity) {
		r.log.Warn("no node identity: replication is off until `dmsync init` and a restart", "state_dir", r.cfg.stateDir)
		self, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node key: %w: restore %s and %s from a backup, or move them away and run `dmsync init` (peers must pin the new id)",
			err, filepath.Join(r.cfg.stateDir, identity.KeyFile), filepath.Join(r.cfg.stateDir, identity.CertFile))
	}
	if _, err := replicate.LoadConfig(filepath.Join(r.cfg.stateDir, "config.json")); err != nil {
		return nil, fmt.Errorf("%w; dmsyncd looks again every %s", err, configRecheck)
	}
	return self, nil
}

// watchProblems reports the replication manager's own problems (receiver
// listen failures, receive images that cannot be opened) as they change.
func (r *replicator) watchProblems(ctx context.Context, m *replicate.Manager) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last string
	for {
		ps := m.Problems()
		if s := strings.Join(ps, "; "); s != last {
			last = s
			r.problem("receiver", s)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// resolve finds a local volume by its dm name: a mirror whose table uses a
// userspace log (created by `dmsync volume create` or by plain dmsetup).
// Its bytes are read from the mirror device itself, below any dm-crypt.
func resolve(ctx context.Context, dm *dmtarget.Control, dmErr error, name string) (replicate.Source, error) {
	if dmErr != nil {
		return replicate.Source{}, fmt.Errorf("volume %s: %w", name, dmErr)
	}
	vols, err := dmtarget.ListUserspaceLogVolumes(ctx, dm)
	if err != nil {
		return replicate.Source{}, err
	}
	// A volume is named by its mirror's dm name, by the dmsync volume on
	// top of it (NAME over NAME-mirror), or by its log uuid.
	for _, v := range vols {
		if v.Name == name || v.Name == name+"-mirror" || v.LogUUID() == name {
			return replicate.Source{LogUUID: v.LogUUID(), Path: "/dev/mapper/" + v.Name, Size: v.Length * 512}, nil
		}
	}
	return replicate.Source{}, fmt.Errorf("%w %q: no dm mirror with a userspace log has that name (see `dmsetup ls` and `dmsync volume list`)", replicate.ErrNoVolume, name)
}

// unavailableDM answers every volume request with why device-mapper
// cannot be used on this host.
type unavailableDM struct{ err error }

func (u unavailableDM) Plan(context.Context, dmtarget.VolumeSpec) (*dmtarget.Plan, error) {
	return nil, u.err
}
func (u unavailableDM) Apply(context.Context, *dmtarget.Plan) error { return u.err }
func (u unavailableDM) Find(context.Context, string) (dmtarget.Volume, error) {
	return dmtarget.Volume{}, u.err
}
func (u unavailableDM) List(context.Context) ([]dmtarget.Volume, error) { return nil, u.err }
func (u unavailableDM) Status(context.Context, string) (dmtarget.VolumeStatus, error) {
	return dmtarget.VolumeStatus{}, u.err
}
func (u unavailableDM) Remove(context.Context, string) error { return u.err }

// noConnector is the dirty log connection of a daemon started with
// --no-connector: it never receives a request.
func noConnector() (logd.Conn, error) { return &idleConn{done: make(chan struct{})}, nil }

type idleConn struct {
	once sync.Once
	done chan struct{}
}

func (c *idleConn) Receive(ctx context.Context) ([][]byte, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, net.ErrClosed
	}
}
func (c *idleConn) Send([]byte) error { return errors.New("no connector: --no-connector is set") }
func (c *idleConn) Close() error      { c.once.Do(func() { close(c.done) }); return nil }

// freezer makes consistency points of the volume with log uuid: the log
// server freezes the devices above its mirror (cmd/dmsyncd/freeze.go), so
// that a replicator that dies mid-freeze cannot leave them suspended.
func (r *replicator) freezer(uuid string) rpc.Freezer {
	return func(ctx context.Context, maxPause time.Duration) (rpc.Freeze, error) {
		f, err := r.lc.Freeze(ctx, uuid, maxPause, r.cfg.fsfreeze)
		if errors.Is(err, logapi.ErrFreezeUnavailable) {
			return rpc.Freeze{}, fmt.Errorf("%w: %w", rpc.ErrNoPoints, err)
		}
		if err != nil {
			return rpc.Freeze{}, err
		}
		return rpc.Freeze{At: f.FrozenAt, Thaw: func(ctx context.Context) (bool, time.Duration, error) {
			return r.lc.Thaw(ctx, uuid, f.Token)
		}}, nil
	}
}
