package rpctest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/kerneltest"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

// logDriver is one implementation of logd.Replicator with the kernel-side
// actions the conformance suite needs.
type logDriver interface {
	logd.Replicator
	// adopt creates a volume of count regions of regionSize bytes with
	// every region pending (a new peer's full sync).
	adopt(t *testing.T, uuid string, regionSize, count uint64)
	// mark and clear are the kernel's MARK and CLEAR of regions, each
	// followed by its FLUSH.
	mark(t *testing.T, uuid string, regions ...uint64)
	clear(t *testing.T, uuid string, regions ...uint64)
}

type fakeDriver struct{ *rpctest.FakeLog }

func (f fakeDriver) adopt(_ *testing.T, uuid string, regionSize, count uint64) {
	f.AddVolume(uuid, regionSize, count)
}
func (f fakeDriver) mark(_ *testing.T, uuid string, regions ...uint64) {
	for _, r := range regions {
		f.Mark(uuid, r)
	}
}
func (f fakeDriver) clear(_ *testing.T, uuid string, regions ...uint64) {
	for _, r := range regions {
		f.Clear(uuid, r)
	}
}

// serverDriver is a real logd.Server on an in-memory Pebble, spoken to by
// kerneltest's fake kernel over the connector wire format.
type serverDriver struct {
	*logd.Server
	k *kerneltest.Kernel
}

func newServerDriver(t *testing.T) serverDriver {
	db, err := pebble.Open("state", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := logd.NewServer(logd.PebbleStore{DB: db}, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := kerneltest.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, k.Conn()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if v := k.Violations(); len(v) > 0 {
			t.Errorf("kernel would reject replies: %v", v)
		}
		db.Close()
	})
	return serverDriver{srv, k}
}

func (d serverDriver) do(t *testing.T, uuid string, rt logd.RequestType, data []byte) {
	t.Helper()
	if _, err := d.k.Do(context.Background(), uuid, 1, rt, data); err != nil {
		t.Fatalf("%v: %v", rt, err)
	}
}

func (d serverDriver) adopt(t *testing.T, uuid string, regionSize, count uint64) {
	t.Helper()
	sectors := regionSize / 512
	d.do(t, uuid, logd.ReqCtr, fmt.Appendf(nil, "%d core %d nosync", sectors*count, sectors))
	if err := d.PendAll(uuid); err != nil {
		t.Fatal(err)
	}
}
func (d serverDriver) mark(t *testing.T, uuid string, regions ...uint64) {
	t.Helper()
	d.do(t, uuid, logd.ReqMarkRegion, logd.AppendRegions(nil, regions...))
	d.do(t, uuid, logd.ReqFlush, nil)
}
func (d serverDriver) clear(t *testing.T, uuid string, regions ...uint64) {
	t.Helper()
	d.do(t, uuid, logd.ReqClearRegion, logd.AppendRegions(nil, regions...))
	d.do(t, uuid, logd.ReqFlush, nil)
}

// TestReplicatorConformance runs the same checks against FakeLog and a
// real logd.Server: what rpc's sender relies on must hold for both.
func TestReplicatorConformance(t *testing.T) {
	drivers := map[string]func(t *testing.T) logDriver{
		"FakeLog":     func(*testing.T) logDriver { return fakeDriver{rpctest.NewFakeLog()} },
		"logd.Server": func(t *testing.T) logDriver { return newServerDriver(t) },
	}
	for name, mk := range drivers {
		t.Run(name, func(t *testing.T) {
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) { c.fn(t, mk(t)) })
			}
		})
	}
}

const cuuid = "conformance-volume"

func pendingRegions(t *testing.T, d logDriver) []logd.PendingRegion {
	t.Helper()
	p, err := d.Pending(cuuid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func regionsOf(p []logd.PendingRegion) []uint64 {
	out := make([]uint64, len(p))
	for i, r := range p {
		out[i] = r.Region
	}
	return out
}

func quiet(t *testing.T, d logDriver, region uint64) bool {
	t.Helper()
	q, err := d.Quiet(cuuid, region)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

var conformance = []struct {
	name string
	fn   func(t *testing.T, d logDriver)
}{
	{"adopted volume is all pending, ascending", func(t *testing.T, d logDriver) {
		d.adopt(t, cuuid, 64<<10, 8)
		size, count, err := d.RegionSize(cuuid)
		if err != nil || size != 64<<10 || count != 8 {
			t.Fatalf("RegionSize = %d, %d, %v; want 65536, 8", size, count, err)
		}
		if got := regionsOf(pendingRegions(t, d)); fmt.Sprint(got) != "[0 1 2 3 4 5 6 7]" {
			t.Fatalf("pending %v", got)
		}
		found := false
		for _, v := range d.Volumes() {
			found = found || v == cuuid
		}
		if !found {
			t.Fatalf("Volumes() = %v lacks %s", d.Volumes(), cuuid)
		}
		if _, _, err := d.RegionSize("no-such-volume"); err == nil {
			t.Fatal("RegionSize of an unknown volume succeeded")
		}
	}},
	{"replicated leaves the pending set; a second ack changes nothing", func(t *testing.T, d logDriver) {
		d.adopt(t, cuuid, 64<<10, 4)
		p := pendingRegions(t, d)
		n, err := d.Replicated(cuuid, p[:3])
		if err != nil || n != 3 {
			t.Fatalf("Replicated = %d, %v; want 3", n, err)
		}
		if got := regionsOf(pendingRegions(t, d)); fmt.Sprint(got) != "[3]" {
			t.Fatalf("pending %v, want [3]", got)
		}
		if n, err := d.Replicated(cuuid, p[:1]); n != 0 || err != nil {
			t.Fatalf("second ack: %d, %v; want 0, nil", n, err)
		}
	}},
	{"a write in flight makes a region busy and pending; CLEAR makes it quiet, still pending", func(t *testing.T, d logDriver) {
		d.adopt(t, cuuid, 64<<10, 4)
		if _, err := d.Replicated(cuuid, pendingRegions(t, d)); err != nil {
			t.Fatal(err)
		}
		d.mark(t, cuuid, 2)
		if quiet(t, d, 2) || !quiet(t, d, 1) {
			t.Fatal("region 2 quiet with a MARK outstanding, or region 1 busy")
		}
		if got := regionsOf(pendingRegions(t, d)); fmt.Sprint(got) != "[2]" {
			t.Fatalf("pending %v, want [2]", got)
		}
		d.clear(t, cuuid, 2)
		if !quiet(t, d, 2) {
			t.Fatal("region 2 busy after CLEAR")
		}
		if got := regionsOf(pendingRegions(t, d)); fmt.Sprint(got) != "[2]" {
			t.Fatalf("CLEAR removed the region from the pending set: %v", got)
		}
	}},
	{"an ack for an old generation, or of a busy region, leaves it pending", func(t *testing.T, d logDriver) {
		d.adopt(t, cuuid, 64<<10, 4)
		old := pendingRegions(t, d)
		d.mark(t, cuuid, 1)
		d.clear(t, cuuid, 1)
		d.mark(t, cuuid, 2) // still in flight
		now := pendingRegions(t, d)
		n, err := d.Replicated(cuuid, append(old[:2:2], now[2]))
		if err != nil || n != 1 {
			t.Fatalf("Replicated = %d, %v; want 1 (region 0 only)", n, err)
		}
		if got := regionsOf(pendingRegions(t, d)); fmt.Sprint(got) != "[1 2 3]" {
			t.Fatalf("pending %v, want [1 2 3]", got)
		}
	}},
	{"changes are announced", func(t *testing.T, d logDriver) {
		d.adopt(t, cuuid, 64<<10, 4)
		if _, err := d.Replicated(cuuid, pendingRegions(t, d)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ch := d.Changes(ctx)
		d.mark(t, cuuid, 3)
		select {
		case u := <-ch:
			if u != cuuid {
				t.Fatalf("change for %q", u)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no change announced after a MARK")
		}
		cancel()
		for range ch { // closed once ctx is done
		}
	}},
}
