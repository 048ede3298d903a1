package main

import (
	"context"
	"errors"
	"fmt"

	"net"
	"sync"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/internal/replicate"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
)

// chunker is how this node cuts changed ranges into chunks for its peers.
// Peers must agree on it: it is part of the wire format.
func chunker() rpc.Chunker { return rpc.FixedChunker{Size: 4096} }

// addServices registers the admin API (volumes and replication, on the
// root-only unix socket) and the replication manager.
func (d *daemon) addServices() error {
	dm, dmErr := dmtarget.Open(dmtarget.Options{Logger: d.log})
	var vm admin.VolumeManager = unavailableDM{dmErr}
	if dmErr != nil {
		d.log.Warn("device-mapper not available: volume commands will fail; receiving still works", "err", dmErr)
	} else {
		vm = &dmtarget.Builder{DM: dm, Host: dmtarget.SystemHost{}, Logger: d.log.With("component", "dmtarget"), DaemonSocket: d.cfg.adminSocket}
	}

	self, err := identity.Load(d.cfg.stateDir)
	if errors.Is(err, identity.ErrNoIdentity) {
		d.log.Warn("no node identity: replication is off until `dmsync init` and a restart", "state_dir", d.cfg.stateDir)
		self, err = nil, nil
	}
	if err != nil {
		return err
	}
	repl, err := replicate.New(replicate.Options{
		StateDir: d.cfg.stateDir, Listen: d.cfg.listen, Self: self, Log: d.logd,
		Store: pebble.NewReplicaStore(d.db.Raw()), Chunker: chunker(),
		Logger: d.log.With("component", "replicate"),
		Resolve: func(ctx context.Context, name string) (replicate.Source, error) {
			return resolve(ctx, dm, dmErr, name)
		},
	})
	if err != nil {
		return err
	}
	d.register("replication", repl.Run)

	g := grpc.NewServer()
	admin.Register(g, admin.NewServer(vm, d.log.With("component", "admin")))
	replicate.Register(g, repl)
	d.register("admin socket", func(ctx context.Context) error {
		ln, err := admin.Listen(d.cfg.adminSocket, d.log)
		if err != nil {
			return err
		}
		go func() {
			<-ctx.Done()
			g.Stop()
		}()
		return g.Serve(ln)
	})
	return nil
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
	for _, v := range vols {
		if v.Name == name {
			return replicate.Source{LogUUID: v.LogUUID(), Path: "/dev/mapper/" + name, Size: v.Length * 512}, nil
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
