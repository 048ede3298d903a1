package logapi

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/logpb"
)

// fakeLog is a logd.Replicator with one volume "v" of 8 regions.
// Stats implements Log: the fake counts nothing but its PendAll calls.
func (f *fakeLog) Stats() logd.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return logd.Stats{Syncs: uint64(f.pendAll)}
}

type fakeLog struct {
	mu      sync.Mutex
	pending map[uint64]uint64
	feed    chan string
	failed  error
	pendAll int
}

func (f *fakeLog) Volumes() []string { return []string{"v"} }
func (f *fakeLog) RegionSize(uuid string) (uint64, uint64, error) {
	if uuid != "v" {
		return 0, 0, logd.ErrUnknownVolume
	}
	return 65536, 8, nil
}
func (f *fakeLog) Pending(uuid string) ([]logd.PendingRegion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []logd.PendingRegion
	for r := uint64(0); r < 8; r++ {
		if g, ok := f.pending[r]; ok {
			out = append(out, logd.PendingRegion{Region: r, Gen: g})
		}
	}
	return out, nil
}
func (f *fakeLog) Quiet(uuid string, r uint64) (bool, error) {
	if r >= 8 {
		return false, logd.ErrRegionRange
	}
	return r%2 == 0, nil
}
func (f *fakeLog) Replicated(uuid string, regions []logd.PendingRegion) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed != nil {
		return 0, f.failed
	}
	n := 0
	for _, p := range regions {
		if f.pending[p.Region] == p.Gen {
			delete(f.pending, p.Region)
			n++
		}
	}
	return n, nil
}
func (f *fakeLog) PendAll(uuid string) error { f.pendAll++; return nil }

// PendRegions implements Log like logd.Server: unknown volumes and regions
// past the end are refused.
func (f *fakeLog) PendRegions(uuid string, regions []uint64) error {
	if uuid != "v" {
		return logd.ErrUnknownVolume
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range regions {
		if r >= 8 {
			return logd.ErrRegionRange
		}
	}
	for _, r := range regions {
		f.pending[r] = 100 + r
	}
	return nil
}
func (f *fakeLog) Changes(ctx context.Context) <-chan string {
	out := make(chan string)
	go func() {
		defer close(out)
		for {
			select {
			case u := <-f.feed:
				select {
				case out <- u:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func serve(t *testing.T, f *fakeLog, path string) (stop func()) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("unix sockets: %v", err)
	}
	g := grpc.NewServer()
	Register(g, NewServer(Options{Log: f, Health: func() *logpb.HealthResponse {
		return &logpb.HealthResponse{Summary: "ok"}
	}}))
	go g.Serve(ln)
	return g.Stop
}

func TestClientOverSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.sock")
	f := &fakeLog{pending: map[uint64]uint64{1: 10, 3: 11, 5: 12}, feed: make(chan string)}
	stop := serve(t, f, path)
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v := c.Volumes(); len(v) != 1 || v[0] != "v" {
		t.Fatalf("volumes %v", v)
	}
	if s, n, err := c.RegionSize("v"); s != 65536 || n != 8 || err != nil {
		t.Fatalf("region size %d %d %v", s, n, err)
	}
	if _, _, err := c.RegionSize("nope"); !errors.Is(err, logd.ErrUnknownVolume) {
		t.Fatalf("unknown volume: %v", err)
	}
	if _, err := c.Quiet("v", 99); !errors.Is(err, logd.ErrRegionRange) {
		t.Fatalf("range: %v", err)
	}
	if q, err := c.Quiet("v", 2); !q || err != nil {
		t.Fatalf("quiet %v %v", q, err)
	}
	n, err := c.Replicated("v", []logd.PendingRegion{{Region: 1, Gen: 10}, {Region: 3, Gen: 99}})
	if n != 1 || err != nil {
		t.Fatalf("replicated %d %v", n, err)
	}
	p, err := c.Pending("v")
	if err != nil || len(p) != 2 || p[0] != (logd.PendingRegion{Region: 3, Gen: 11}) || p[1].Region != 5 {
		t.Fatalf("pending %v %v", p, err)
	}
	f.mu.Lock()
	f.failed = logd.ErrStore
	f.mu.Unlock()
	if _, err := c.Replicated("v", []logd.PendingRegion{{Region: 3, Gen: 11}}); !errors.Is(err, logd.ErrStore) {
		t.Fatalf("failed store: %v", err)
	}
	if err := c.PendAll("v"); err != nil || f.pendAll != 1 {
		t.Fatalf("pend all %v", err)
	}
	// PendRegions carries the regions and maps the log's errors back.
	if err := c.PendRegions("v", []uint64{0, 6}); err != nil {
		t.Fatalf("pend regions: %v", err)
	}
	if p, err := c.Pending("v"); err != nil || len(p) != 4 || p[0] != (logd.PendingRegion{Region: 0, Gen: 100}) || p[3] != (logd.PendingRegion{Region: 6, Gen: 106}) {
		t.Fatalf("pending after PendRegions(0, 6): %v %v", p, err)
	}
	if err := c.PendRegions("v", []uint64{8}); !errors.Is(err, logd.ErrRegionRange) {
		t.Fatalf("pend region past the end: %v", err)
	}
	if err := c.PendRegions("nope", []uint64{1}); !errors.Is(err, logd.ErrUnknownVolume) {
		t.Fatalf("pend regions of an unknown volume: %v", err)
	}

	// Changes: every volume once after connecting, then the feed.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := c.Changes(ctx)
	if u := recv(t, ch); u != "v" {
		t.Fatalf("first change %q", u)
	}
	f.feed <- "w"
	if u := recv(t, ch); u != "w" {
		t.Fatalf("change %q", u)
	}
	// The log server goes away and comes back: the stream resumes and
	// announces every volume again.
	stop()
	if _, err := c.Pending("v"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("while down: %v", err)
	}
	stop = serve(t, f, path)
	defer stop()
	if u := recv(t, ch); u != "v" {
		t.Fatalf("after reconnect %q", u)
	}
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("no change notification")
		return ""
	}
}

// TestClientStats: the log server's counters cross the socket intact, and
// a log server that cannot be reached shows as such, not as healthy.
func TestClientStats(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.sock")
	f := &fakeLog{pending: map[uint64]uint64{}, feed: make(chan string)}
	stop := serve(t, f, path)
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if err := c.PendAll("v"); err != nil {
			t.Fatal(err)
		}
	}
	if st := c.Stats(); st.Syncs != 3 || st.StoreError != "" {
		t.Fatalf("stats over the socket: %+v, want 3 syncs and no error", st)
	}
	stop()
	if st := c.Stats(); st.StoreError == "" {
		t.Fatalf("stats with the log server gone: %+v, want an error", st)
	}
}
