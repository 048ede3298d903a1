package main

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/events"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/internal/opstate"
	"github.com/dmsync/dmsync/internal/replicate"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

// statsLog is the fake dirty log with the log server's counters.
type statsLog struct{ *rpctest.FakeLog }

func (statsLog) Stats() logd.Stats { return logd.Stats{Syncs: 3} }

const (
	opsRegion  = 64 << 10
	opsRegions = 32
	opsSize    = opsRegion * opsRegions
)

// replNode is a replication manager with its own state, over log.
func replNode(t *testing.T, listen string, log *rpctest.FakeLog, src string) (*replicate.Manager, *identity.Identity, string) {
	t.Helper()
	dir := t.TempDir()
	id, err := identity.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(filepath.Join(dir, "pebble"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m, err := replicate.New(replicate.Options{
		StateDir: dir, Listen: listen, Self: id, Log: log, Store: pebble.NewReplicaStore(db.Raw()),
		Chunker: rpc.FixedChunker{Size: 4096}, RetryDelay: 50 * time.Millisecond,
		Resolve: func(ctx context.Context, volume string) (replicate.Source, error) {
			return replicate.Source{LogUUID: "uuid-vol", Path: src, Size: opsSize}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return m, id, dir
}

// TestOpsSourceWithReplication runs real replication between two managers
// and follows it the way the daemon does (nodeSource, Tracker, Watch):
// the peer comes up, the volume reaches a consistent point (an event, and
// the recovery point in the snapshot), new writes show in the pending map,
// and the next consistent point is another event.
func TestOpsSourceWithReplication(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	srcDir := t.TempDir()
	src := filepath.Join(srcDir, "volume")
	data := make([]byte, opsSize)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	b, bID, bDir := replNode(t, listen, rpctest.NewFakeLog(), "")
	alog := rpctest.NewFakeLog()
	alog.AddVolume("uuid-vol", opsRegion, opsRegions)
	a, aID, _ := replNode(t, "", alog, src)
	if err := b.Receive(replicate.Receive{Volume: "uuid-vol", From: aID.ID, Image: filepath.Join(bDir, "replica"), Size: opsSize}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddPeer(replicate.Peer{ID: bID.ID, Addr: listen}); err != nil {
		t.Fatal(err)
	}

	tr := opstate.NewTracker(&nodeSource{self: aID.ID, repl: a, log: statsLog{alog}})
	hub := events.NewHub(0)
	sub := hub.Subscribe(0)
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go events.Watch(ctx, tr, hub, 20*time.Millisecond)
	time.Sleep(50 * time.Millisecond) // a first snapshot before replication starts
	if _, err := a.Replicate(ctx, "vol", bID.ID); err != nil {
		t.Fatal(err)
	}
	waitEvent := func(kind events.Kind) events.Event {
		t.Helper()
		for {
			select {
			case e := <-sub.C:
				if e.Kind == kind {
					return e
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no %s event", kind)
			}
		}
	}
	waitEvent(events.PeerUp)
	e := waitEvent(events.ConsistentPoint)
	if e.Volume != "vol" || !strings.Contains(e.Message, "holds the volume") {
		t.Fatalf("event %+v", e)
	}
	s := tr.Snapshot(opstate.WithPendingMap(ctx))
	v, ok := s.Volume("vol")
	if !ok || !v.PeerUp || !v.Synced || v.LastConsistent.IsZero() || v.PendingRegions != 0 || v.BytesSent == 0 ||
		v.Regions != opsRegions || len(v.PendingMap) != opsRegions || v.LastAck.IsZero() || v.PeerAddr != listen {
		t.Fatalf("synced volume: %+v", v)
	}
	if s.Log == nil || s.Log.Syncs != 3 || s.Node != aID.ID {
		t.Fatalf("snapshot: %+v", s)
	}

	// A write in flight: region 5 pending, not yet consistent.
	alog.Mark("uuid-vol", 5)
	if s = tr.Snapshot(ctx); s.Volumes[0].PendingMap != nil {
		t.Fatal("a pending map that was not asked for")
	}
	s = tr.Snapshot(opstate.WithPendingMap(ctx))
	v, _ = s.Volume("vol")
	if v.Synced || v.PendingRegions != 1 || v.PendingMap[5] != 1 || v.PendingMap[4] != 0 {
		t.Fatalf("after a MARK: synced %v, %d pending, map %v", v.Synced, v.PendingRegions, v.PendingMap)
	}
	lastPoint := v.LastConsistent
	// The watcher samples every 20 ms: let it see the write in flight (the
	// sender skips a region while a write is in flight).
	time.Sleep(200 * time.Millisecond)
	data[5*opsRegion] ^= 0xff
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	alog.Clear("uuid-vol", 5)
	waitEvent(events.ConsistentPoint)
	s = tr.Snapshot(ctx)
	if v, _ = s.Volume("vol"); !v.LastConsistent.After(lastPoint) {
		t.Fatalf("recovery point did not move: %v then %v", lastPoint, v.LastConsistent)
	}
	if len(s.Receives) != 0 {
		t.Fatalf("A receives nothing: %+v", s.Receives)
	}
}
