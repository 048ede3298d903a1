package replicate

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

const (
	testRegion  = 64 << 10
	testRegions = 32
	testSize    = testRegion * testRegions
)

type node struct {
	dir  string
	id   *identity.Identity
	log  *rpctest.FakeLog
	m    *Manager
	src  string // the sender's volume file
	db   *pebble.DB
	stop func() // stops the manager (also at cleanup)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newNode makes a node with its own state directory, identity and store;
// listen "" makes a node that only sends.
func newNode(t *testing.T, listen string, tune ...func(*Options)) *node {
	t.Helper()
	return newNodeIn(t, t.TempDir(), listen, tune...)
}

// newNodeIn is newNode in dir, which may already hold a store (pebble/).
func newNodeIn(t *testing.T, dir, listen string, tune ...func(*Options)) *node {
	t.Helper()
	id, err := identity.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(filepath.Join(dir, "pebble"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	n := &node{dir: dir, id: id, log: rpctest.NewFakeLog(), src: filepath.Join(dir, "volume"), db: db}
	o := Options{
		StateDir: dir, Listen: listen, Self: id, Log: n.log, Store: pebble.NewReplicaStore(db.Raw()),
		Chunker: rpc.FixedChunker{Size: 4096}, RetryDelay: 50 * time.Millisecond,
		Resolve: func(ctx context.Context, volume string) (Source, error) {
			if volume != "vol" {
				return Source{}, ErrNoVolume
			}
			return Source{LogUUID: "uuid-vol", Path: n.src, Size: testSize}, nil
		},
	}
	for _, f := range tune {
		f(&o)
	}
	n.m, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.m.Run(ctx) }()
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(n.stop)
	return n
}

// write changes count random 4 KiB blocks of the source and tells the
// fake dirty log as the kernel would: MARK before the data is written,
// CLEAR after it is on disk.
func (n *node) write(t *testing.T, r *rand.Rand, data []byte, count int) {
	t.Helper()
	var regions []uint64
	for i := 0; i < count; i++ {
		off := r.IntN(testSize/4096) * 4096
		for j := off; j < off+4096; j++ {
			data[j] = byte(r.Uint32())
		}
		regions = append(regions, uint64(off/testRegion))
		n.log.Mark("uuid-vol", uint64(off/testRegion))
	}
	if err := os.WriteFile(n.src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, reg := range regions {
		n.log.Clear("uuid-vol", reg)
	}
}

func waitReplica(t *testing.T, a *node, replica string, want []byte) SendStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := a.m.Wait(ctx, "vol")
	if err != nil {
		t.Fatalf("Wait: %v (status %+v)", err, st)
	}
	got, err := os.ReadFile(replica)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("replica differs from the source after Wait (status %+v)", st)
	}
	return st
}

func TestReplicateTwoNodes(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	b := newNode(t, freeAddr(t))
	a := newNode(t, "")
	data := make([]byte, testSize)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(a.src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a.log.AddVolume("uuid-vol", testRegion, testRegions) // newly adopted: all pending

	replica := filepath.Join(b.dir, "replica.img")
	if err := b.m.Receive(Receive{Volume: "uuid-vol", From: a.id.ID, Image: replica, Size: testSize}); err != nil {
		t.Fatal(err)
	}
	if err := a.m.AddPeer(Peer{ID: b.id.ID, Addr: b.m.opts.Listen}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Replicate(context.Background(), "vol", b.id.ID); err != nil {
		t.Fatal(err)
	}
	st := waitReplica(t, a, replica, data)
	if st.Stats.BytesSent < testSize {
		t.Errorf("initial sync sent %d bytes, want the whole %d-byte volume", st.Stats.BytesSent, testSize)
	}
	if st.LastAck.IsZero() || st.PeerRoot == (rpc.ID{}) {
		t.Errorf("no ack recorded: %+v", st)
	}

	// Scattered writes: only their blocks go again.
	sentBefore := st.Stats.BytesSent
	a.write(t, r, data, 10)
	st = waitReplica(t, a, replica, data)
	if sent := st.Stats.BytesSent - sentBefore; sent == 0 || sent > 10*4096 {
		t.Errorf("10 scattered 4 KiB writes sent %d bytes, want 1..%d", sent, 10*4096)
	}
	v, err := a.m.Verify(context.Background(), "vol", VerifyOptions{Index: true})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Equal || !v.IndexEqual || v.Scrubbed != testSize {
		t.Fatalf("roots differ after replication: %+v", v)
	}
	recv := b.m.Receiving()
	if len(recv) != 1 || recv[0].Err != nil || recv[0].Root.Root != v.Source.Root || recv[0].Root.Applying {
		t.Fatalf("receiver status %+v, want root %x", recv, v.Source.Root)
	}

	// A write that bypassed the dirty log (here: straight into the source
	// file) is found by verify, down to its chunk.
	data[5*4096+100] ^= 0xff
	if err := os.WriteFile(a.src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err = a.m.Verify(context.Background(), "vol", VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Equal || len(v.Differ) != 1 || v.Differ[0].Off != 5*4096 || v.Differ[0].Len != 4096 {
		t.Fatalf("verify after an unlogged write at %d: equal=%v differ=%+v", 5*4096+100, v.Equal, v.Differ)
	}
	// Repair makes the region holding it pending; it is sent again.
	v, err = a.m.Verify(context.Background(), "vol", VerifyOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Repaired) != 1 || v.RegionSize == 0 || v.Repaired[0] != 5*4096/v.RegionSize {
		t.Fatalf("repair made regions %v pending (region size %d), want the one holding byte %d", v.Repaired, v.RegionSize, 5*4096)
	}
	waitReplica(t, a, replica, data)
	if v, err = a.m.Verify(context.Background(), "vol", VerifyOptions{Index: true}); err != nil || !v.Equal || !v.IndexEqual {
		t.Fatalf("verify after repair: %+v, %v", v, err)
	}

	// The configuration survives a restart.
	cfg, err := LoadConfig(filepath.Join(a.dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sends) != 1 || cfg.Sends[0] != (Send{Volume: "vol", Peer: b.id.ID}) || len(cfg.Peers) != 1 {
		t.Fatalf("saved config %+v", cfg)
	}
}

func TestReplicateBadRequests(t *testing.T) {
	a := newNode(t, "")
	other, err := identity.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		fn   func() error
	}{
		{"peer id not an id", ErrInvalid, func() error { return a.m.AddPeer(Peer{ID: "nope", Addr: "127.0.0.1:1"}) }},
		{"peer address without port", ErrInvalid, func() error { return a.m.AddPeer(Peer{ID: other.ID, Addr: "127.0.0.1"}) }},
		{"replicate to an unpinned peer", ErrInvalid, func() error {
			_, err := a.m.Replicate(context.Background(), "vol", other.ID)
			return err
		}},
		{"replicate an unknown volume", ErrNoVolume, func() error {
			_, err := a.m.Replicate(context.Background(), "nope", other.ID)
			return err
		}},
		{"receive on a node that does not listen", ErrInvalid, func() error {
			return a.m.Receive(Receive{Volume: "v", From: other.ID, Image: "/tmp/x", Size: 1})
		}},
		{"wait for a volume not replicated", ErrNoVolume, func() error {
			_, err := a.m.Wait(context.Background(), "vol")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.fn()
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
		})
	}
	if cfg := a.m.Config(); len(cfg.Peers) != 0 || len(cfg.Sends) != 0 {
		t.Fatalf("failed requests changed the config: %+v", cfg)
	}
}
