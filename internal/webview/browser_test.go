package webview

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/events"
	"github.com/dmsync/dmsync/internal/opstate"
	"github.com/dmsync/dmsync/logd"
)

// fakeNode is a node with two volumes and a replica, whose state the test
// changes while the page watches.
type fakeNode struct {
	mu   sync.Mutex
	snap opstate.Snapshot
}

func (f *fakeNode) Snapshot(context.Context) opstate.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	s.Time = time.Now()
	s.Volumes = append([]opstate.Volume(nil), s.Volumes...)
	return s
}

func (f *fakeNode) update(fn func(s *opstate.Snapshot)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.snap)
}

func newFakeNode() *fakeNode {
	const regions = 4096
	var pending []uint64
	for r := uint64(1000); r < 1400; r++ { // a hot range
		pending = append(pending, r)
	}
	for r := uint64(3000); r < regions; r += 7 { // scattered writes
		pending = append(pending, r)
	}
	var mark, flush logd.RequestStats
	mark.Name, mark.Type, mark.Count, mark.Sum = "MARK_REGION", logd.ReqMarkRegion, 1200, 1200*180*time.Microsecond
	mark.Buckets[7], mark.Buckets[8], mark.Buckets[9] = 900, 280, 20
	flush.Name, flush.Type, flush.Count, flush.Sum = "FLUSH", logd.ReqFlush, 1500, 1500*900*time.Microsecond
	flush.Buckets[9], flush.Buckets[10], flush.Buckets[12] = 1000, 480, 20
	now := time.Now()
	return &fakeNode{snap: opstate.Snapshot{
		Node: "k3vq7x2mfa9deb4wq8ht5n", Version: "0.1.0",
		Volumes: []opstate.Volume{{
			Name: "db", LogUUID: "dmsync-6f1c", Peer: "p7r2d4kq1zsx0bnm3vc8", PeerAddr: "10.0.0.2:7420", PeerUp: true,
			State: "sending", StateKind: "syncing", Size: regions << 20, RegionSize: 1 << 20, Regions: regions,
			PendingRegions: uint64(len(pending)), PendingBytes: uint64(len(pending)) << 20,
			PendingMap: opstate.PendingMap(pending, regions, opstate.MapCells),
			BytesRead:  7 << 30, BytesSent: 3 << 30, Rate: 96 << 20, ETA: 6 * time.Second,
			LastAck: now.Add(-2 * time.Second), LastConsistent: now.Add(-3 * time.Minute),
			Legs: []opstate.Leg{{Index: 0, Device: "8:16", Health: "alive", OK: true}, {Index: 1, Device: "8:32", Health: "alive", OK: true}},
		}, {
			Name: "home", Peer: "p7r2d4kq1zsx0bnm3vc8", PeerAddr: "10.0.0.2:7420", PeerUp: false, StateKind: "peer-unreachable",
			State: "retrying in 8s: connection refused", Size: 512 << 20, RegionSize: 1 << 20, Regions: 512,
			PendingMap: opstate.PendingMap(nil, 512, opstate.MapCells),
			Legs:       []opstate.Leg{{Index: 0, Device: "8:48", Health: "alive", OK: true}, {Index: 1, Device: "8:64", Health: "write-failed"}},
		}},
		Receives: []opstate.Receive{{Volume: "backup-of-c", From: "zz81mq0c4d", Image: "/dev/vg0/replica", Size: 2 << 30, Root: "ab12"}},
		Log:      &logd.Stats{Requests: []logd.RequestStats{flush, mark}, Syncs: 1480, SyncTime: 1300 * time.Millisecond},
	}}
}

// chromiumPath finds Debian's chromium (scripts/deps.sh installs it).
func chromiumPath(t *testing.T) string {
	if p := os.Getenv("DMSYNC_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not installed (scripts/deps.sh installs Debian's chromium; or set DMSYNC_CHROMIUM): the web view is not tested in a browser")
	return ""
}

// TestWebViewInChromium loads the page in headless chromium against a fake
// node and checks that it renders the state it got over the websocket,
// follows live changes and events, and saves a screenshot
// (DMSYNC_WEBVIEW_SCREENSHOT names the file; else the test's artifact
// directory, kept with -artifacts).
func TestWebViewInChromium(t *testing.T) {
	bin := chromiumPath(t)
	node := newFakeNode()
	hub := events.NewHub(0)
	hub.Emit(events.PeerUp, "db", "db: peer p7r2d4kq1zsx… (10.0.0.2:7420) is up")
	hub.Emit(events.LegFailed, "home", "leg 1 (8:64) of home: write-failed")
	hub.Emit(events.PeerDown, "home", "home: peer p7r2d4kq1zsx… (10.0.0.2:7420) is down: connection refused")
	h := Handler(Options{Source: node, Events: hub, Interval: 200 * time.Millisecond}).(*handler)
	srv := httptest.NewServer(h)
	defer srv.Close()

	start := time.Now()
	b := startBrowser(t, bin, srv.URL, 1280, 1000)
	// The page has no data of its own: all of it comes over the websocket.
	b.waitFor(t, "both volumes", `document.querySelectorAll(".volume").length === 2`, 30*time.Second)
	b.waitFor(t, "the failed leg", `[...document.querySelectorAll(".leg.bad")].some(e => e.textContent.includes("write-failed"))`, 5*time.Second)
	b.waitFor(t, "the pending map", `document.querySelectorAll('[data-volume="db"] .map i').length === 256`, 5*time.Second)
	b.waitFor(t, "the old events", `document.querySelectorAll("#events li[data-seq]").length === 3`, 5*time.Second)
	b.waitFor(t, "db syncing, home unreachable", `document.querySelector('[data-volume="db"] .badge').textContent === "syncing" &&
		document.querySelector('[data-volume="home"] .badge').textContent === "degraded leg"`, 5*time.Second)
	b.waitFor(t, "the log server's table", `document.getElementById("log").textContent.includes("MARK_REGION")`, 5*time.Second)

	// Live: db catches up, and an event arrives.
	node.update(func(s *opstate.Snapshot) {
		v := &s.Volumes[0]
		v.PendingRegions, v.PendingBytes, v.Synced = 0, 0, true
		v.PendingMap = opstate.PendingMap(nil, v.Regions, opstate.MapCells)
	})
	hub.Emit(events.ConsistentPoint, "db", "db: peer p7r2d4kq1zsx… holds the volume as of now")
	b.waitFor(t, "db synced", `document.querySelector('[data-volume="db"] .badge').textContent === "synced"`, 10*time.Second)
	b.waitFor(t, "the live event on top", `document.querySelector("#events li").dataset.seq === "4"`, 10*time.Second)

	// Put the pending range back for the picture.
	fresh := newFakeNode()
	node.update(func(s *opstate.Snapshot) { s.Volumes[0] = fresh.snap.Volumes[0] })
	b.waitFor(t, "db syncing again", `document.querySelector('[data-volume="db"] .badge').textContent === "syncing"`, 10*time.Second)
	if got, _ := b.eval(t, "document.title").(string); got != "dmsync — 2 volumes, 0 synced" {
		t.Errorf("title %q", got)
	}
	if got, _ := b.eval(t, `document.getElementById("conn").textContent`).(string); got != "live" {
		t.Errorf("connection badge %q", got)
	}

	path := os.Getenv("DMSYNC_WEBVIEW_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.ArtifactDir(), "webview.png")
	}
	b.screenshot(t, path)
	t.Logf("screenshot of the web view: %s (%v in chromium)", path, time.Since(start).Round(time.Millisecond))
}
