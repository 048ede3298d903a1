package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/internal/replicate"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

// A daemon for the CLI's tests, on a real unix socket: the Volumes service
// over a fake device-mapper, and the Replication service of a real
// replicate.Manager over a fake dirty log, with a real store and, if it
// listens, a real TLS receiver. Its one sendable volume is "vol" (log
// uuid "uuid-vol"), backed by the file env.src.

const (
	testRegion  = 64 << 10
	testRegions = 32
	testSize    = testRegion * testRegions
)

type env struct {
	sock string
	dir  string
	dm   *dmtargettest.Fake
	host *dmtargettest.Host
	id   *identity.Identity
	log  *pendLog
	m    *replicate.Manager
	src  string
}

// pendLog is the fake dirty log with PendAll (logd.Server has it).
type pendLog struct{ *rpctest.FakeLog }

func (l pendLog) PendAll(uuid string) error {
	_, n, err := l.RegionSize(uuid)
	if err != nil {
		return err
	}
	for r := uint64(0); r < n; r++ {
		l.Mark(uuid, r)
	}
	for r := uint64(0); r < n; r++ {
		l.Clear(uuid, r)
	}
	return nil
}

// newEnv starts a daemon that does not receive.
func newEnv(t *testing.T) *env { return newNodeEnv(t, "") }

// newNodeEnv starts a daemon; listen "" makes one that does not receive.
func newNodeEnv(t *testing.T, listen string) *env {
	t.Helper()
	f := dmtargettest.New()
	h := dmtargettest.NewHost(f)
	h.Sizes["/dev/vdb"] = 1 << 30
	h.Sizes["/dev/vdc"] = 1 << 30
	h.Sizes["/dev/small"] = 1 << 20
	b := &dmtarget.Builder{DM: f, Host: h}
	dir := t.TempDir()
	e := &env{sock: filepath.Join(dir, "run", "dmsync.sock"), dir: dir, dm: f, host: h,
		log: &pendLog{rpctest.NewFakeLog()}, src: filepath.Join(dir, "vol.img")}
	var err error
	if e.id, err = identity.Init(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(filepath.Join(dir, "pebble"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e.m, err = replicate.New(replicate.Options{
		StateDir: filepath.Join(dir, "state"), Listen: listen, Self: e.id, Log: e.log,
		Store: pebble.NewReplicaStore(db.Raw()), Chunker: rpc.FixedChunker{Size: 4096},
		RetryDelay: 50 * time.Millisecond,
		Resolve: func(ctx context.Context, volume string) (replicate.Source, error) {
			if volume != "vol" && volume != "uuid-vol" {
				return replicate.Source{}, replicate.ErrNoVolume
			}
			return replicate.Source{LogUUID: "uuid-vol", Path: e.src, Size: testSize}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()
	ln, err := admin.Listen(e.sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	admin.Register(g, admin.NewServer(b, nil))
	replicate.Register(g, e.m)
	go g.Serve(ln)
	t.Cleanup(func() {
		g.Stop()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replication: %v", err)
		}
	})
	old := localBuilder
	localBuilder = func() (*dmtarget.Builder, func(), error) { return b, func() {}, nil }
	t.Cleanup(func() { localBuilder = old })
	return e
}

// addVolume gives the env's sendable volume data, every region pending.
func (e *env) addVolume(t *testing.T, data []byte) {
	t.Helper()
	if err := os.WriteFile(e.src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e.log.AddVolume("uuid-vol", testRegion, testRegions)
}
