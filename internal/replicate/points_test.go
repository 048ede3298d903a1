package replicate

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dmsync/dmsync/rpc"
)

// testFreezer counts freezes; the test's writes take frozen's read lock,
// as writes to a suspended device would wait.
type testFreezer struct {
	frozen sync.RWMutex
	mu     sync.Mutex
	uuids  []string
}

func (f *testFreezer) freezer(uuid string) rpc.Freezer {
	return func(ctx context.Context, maxPause time.Duration) (rpc.Freeze, error) {
		f.frozen.Lock()
		f.mu.Lock()
		f.uuids = append(f.uuids, uuid)
		f.mu.Unlock()
		at := time.Now()
		var once sync.Once
		return rpc.Freeze{At: at, Thaw: func(context.Context) (bool, time.Duration, error) {
			once.Do(f.frozen.Unlock)
			return true, time.Since(at), nil
		}}, nil
	}
}

// TestPointsTwoNodes: with a freezer, a sent volume's replica gets
// consistency points: Wait returns only once the peer applied one, both
// nodes' status show it, Snapshot makes a new one, and a send's point
// interval is kept in config.json.
func TestPointsTwoNodes(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	fz := &testFreezer{}
	b := newNode(t, freeAddr(t))
	a := newNode(t, "", func(o *Options) { o.Freezer = fz.freezer })
	data := make([]byte, testSize)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(a.src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a.log.AddVolume("uuid-vol", testRegion, testRegions)
	replica := filepath.Join(b.dir, "replica.img")
	if err := b.m.Receive(Receive{Volume: "uuid-vol", From: a.id.ID, Image: replica, Size: testSize}); err != nil {
		t.Fatal(err)
	}
	if err := a.m.AddPeer(Peer{ID: b.id.ID, Addr: b.m.opts.Listen}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.ReplicateSend(context.Background(), Send{Volume: "vol", Peer: b.id.ID, PointInterval: Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// An hour's interval, but Wait asks for a point.
	st := waitReplica(t, a, replica, data)
	if st.Points.Last.Seq == 0 || st.Points.Points == 0 {
		t.Fatalf("Wait returned without a point: %+v", st.Points)
	}
	rs := b.m.Receiving()
	if len(rs) != 1 || rs[0].Root.Point.Seq != st.Points.Last.Seq || !rs[0].Root.Point.TakenAt.Equal(st.Points.Last.TakenAt) {
		t.Fatalf("B's recovery point %+v, A's %+v", rs, st.Points.Last)
	}
	fz.mu.Lock()
	froze := len(fz.uuids) > 0 && fz.uuids[0] == "uuid-vol"
	fz.mu.Unlock()
	if !froze {
		t.Fatal("the point was made without freezing the volume by its log uuid")
	}

	// Writes, then a snapshot: a new point, later than the last, with the
	// writes in it.
	fz.frozen.RLock()
	a.write(t, r, data, 20)
	fz.frozen.RUnlock()
	before := st.Points.Last
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := a.m.Snapshot(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if p.Last.Seq <= before.Seq || !p.Last.TakenAt.After(before.TakenAt) {
		t.Fatalf("snapshot gave point %+v after %+v", p.Last, before)
	}
	waitReplica(t, a, replica, data)
	cfg, err := LoadConfig(filepath.Join(a.dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sends) != 1 || cfg.Sends[0].PointInterval != Duration(time.Hour) {
		t.Fatalf("saved config %+v: the point interval was not kept", cfg.Sends)
	}
}
