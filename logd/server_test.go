package logd_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/kerneltest"
	"github.com/dmsync/dmsync/pebble"
)

type daemon struct {
	db   *pebble.DB
	srv  *logd.Server
	k    *kerneltest.Kernel
	done chan error
	stop context.CancelFunc
}

func startDaemon(t testing.TB, fs vfs.FS, opts *pebble.Options) *daemon {
	t.Helper()
	if opts == nil {
		opts = &pebble.Options{}
	}
	opts.FS = fs
	db, err := pebble.Open("state", opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := logd.NewServer(logd.PebbleStore{DB: db}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{db: db, srv: srv, k: kerneltest.New(), done: make(chan error, 1), stop: cancel}
	go func() { d.done <- srv.Serve(ctx, d.k.Conn()) }()
	return d
}

func (d *daemon) close(t testing.TB) {
	t.Helper()
	d.stop()
	if err := <-d.done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if v := d.k.Violations(); len(v) > 0 {
		t.Fatalf("kernel would reject replies: %v", v)
	}
	d.db.Close()
}

// check returns a function that fails the test on a non-nil error.
func check(t testing.TB) func([]byte, error) {
	return func(_ []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestServerWritePathAndReplicator(t *testing.T) {
	fs := vfs.NewMem()
	d := startDaemon(t, fs, nil)
	ctx := context.Background()
	k := d.k
	feedCtx, cancelFeed := context.WithCancel(ctx)
	changes := d.srv.Changes(feedCtx)

	check(t)(k.Do(ctx, "vol", 1, logd.ReqCtr, []byte("65536 core 1024 nosync")))
	if in, err := k.InSync(ctx, "vol", 3); err != nil || !in {
		t.Fatalf("in sync %v %v", in, err)
	}
	check(t)(k.Do(ctx, "vol", 1, logd.ReqMarkRegion, logd.AppendRegions(nil, 3, 60)))
	check(t)(k.Do(ctx, "vol", 1, logd.ReqFlush, nil))
	select {
	case u := <-changes:
		if u != "vol" {
			t.Fatalf("feed sent %q", u)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification")
	}
	if q, _ := d.srv.Quiet("vol", 3); q {
		t.Fatal("marked region reported quiet")
	}
	check(t)(k.Do(ctx, "vol", 1, logd.ReqClearRegion, logd.AppendRegions(nil, 3)))
	p, err := d.srv.Pending("vol")
	if err != nil || len(p) != 2 || p[0].Region != 3 || p[1].Region != 60 {
		t.Fatalf("pending %v %v", p, err)
	}
	if n, err := d.srv.Replicated("vol", p[:1]); n != 1 || err != nil {
		t.Fatalf("replicated %v %v", n, err)
	}
	if n, _ := d.srv.Replicated("vol", p[1:]); n != 0 {
		t.Fatal("replicated a region with a write in flight")
	}
	size, count, err := d.srv.RegionSize("vol")
	if size != 1024*512 || count != 64 || err != nil {
		t.Fatalf("region size %d count %d %v", size, count, err)
	}
	if v := d.srv.Volumes(); len(v) != 1 || v[0] != "vol" {
		t.Fatalf("volumes %v", v)
	}
	cancelFeed()
	for range changes { // closed when ctx is done
	}
	d.close(t)

	// Restart: state recovered; the kernel's reconnect (CTR + RESUME) finds it.
	d = startDaemon(t, fs, nil)
	p, _ = d.srv.Pending("vol")
	if len(p) != 1 || p[0].Region != 60 {
		t.Fatalf("after restart pending %v", p)
	}
	// A table load after a reboot (no NUL: not a reconnect).
	check(t)(d.k.Do(ctx, "vol", 2, logd.ReqCtr, []byte("65536 core 1024 nosync")))
	check(t)(d.k.Do(ctx, "vol", 2, logd.ReqResume, nil))
	if in, _ := d.k.InSync(ctx, "vol", 60); in {
		t.Fatal("region marked at the crash is still in sync after RESUME")
	}
	d.close(t)
}

func TestServerBadInput(t *testing.T) {
	d := startDaemon(t, vfs.NewMem(), nil)
	ctx := context.Background()
	m := logd.Message{CnSeq: 9}
	m.Req.SetUUID("v")
	good, _ := logd.AppendMessage(nil, &m, nil)
	for _, b := range [][]byte{nil, {1, 2, 3}, good[:40], good[:len(good)-8], make([]byte, 70000)} {
		d.k.SendRaw(b)
	}
	r, err := d.k.Request(ctx, "nobody", 1, logd.ReqInSync, logd.AppendU64(nil, 1))
	if err != nil || r.Error != -3 {
		t.Fatalf("unknown uuid: %+v %v", r, err)
	}
	r, _ = d.k.Request(ctx, "v", 1, logd.ReqCtr, []byte("100 core 3"))
	if r.Error != -22 {
		t.Fatalf("bad region size accepted: %d", r.Error)
	}
	if v := d.srv.Volumes(); len(v) != 0 {
		t.Fatalf("bad input created volumes %v", v)
	}
	d.close(t)
}

type failingStore struct{ logd.Store }

func (failingStore) Commit([]logd.Change, bool) error     { return errors.New("disk on fire") }
func (failingStore) Load() ([]logd.VolumeSnapshot, error) { return nil, nil }

// TestServerStoreFailureServesFromMemory: a store that fails does not stop
// the server: the kernel's requests are answered from memory, the failure
// is reported, and no region counts as replicated.
func TestServerStoreFailureServesFromMemory(t *testing.T) {
	srv, err := logd.NewServer(failingStore{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := kerneltest.New()
	done := make(chan error, 1)
	sctx, stop := context.WithCancel(context.Background())
	go func() { done <- srv.Serve(sctx, k.Conn()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	check(t)(k.Do(ctx, "v", 1, logd.ReqCtr, []byte("100 core 8")))
	check(t)(k.Do(ctx, "v", 1, logd.ReqFlush, logd.AppendRegions(nil, 2)))
	if err := srv.StoreError(); !errors.Is(err, logd.ErrStore) {
		t.Fatalf("store error %v", err)
	}
	p, err := srv.Pending("v")
	if err != nil || len(p) != 1 {
		t.Fatalf("pending from memory: %v %v", p, err)
	}
	if _, err := srv.Replicated("v", p); !errors.Is(err, logd.ErrStore) {
		t.Fatalf("replicated with a failed store: %v", err)
	}
	if err := srv.PendAll("v"); !errors.Is(err, logd.ErrStore) {
		t.Fatalf("pend all with a failed store: %v", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// TestServerCrashAfterEveryFlush crash-clones the file system each time the
// kernel gets a FLUSH reply: every region marked before that FLUSH must be
// pending after recovery, with at least the acknowledged generation.
func TestServerCrashAfterEveryFlush(t *testing.T) {
	fs := vfs.NewCrashableMem()
	d := startDaemon(t, fs, nil)
	ctx := context.Background()
	k := d.k
	check(t)(k.Do(ctx, "v", 1, logd.ReqCtr, []byte("8192 core 8 nosync")))
	rng := rand.New(rand.NewPCG(3, 4))
	type point struct {
		fs    *vfs.MemFS
		acked map[uint64]uint64
	}
	var points []point
	marked := map[uint64]bool{}
	for range 150 {
		switch rng.IntN(4) {
		case 0, 1:
			r := rng.Uint64N(1024)
			check(t)(k.Do(ctx, "v", 1, logd.ReqMarkRegion, logd.AppendRegions(nil, r)))
			marked[r] = true
		case 2:
			for r := range marked {
				check(t)(k.Do(ctx, "v", 1, logd.ReqClearRegion, logd.AppendRegions(nil, r)))
				delete(marked, r)
				break
			}
		case 3:
			check(t)(k.Do(ctx, "v", 1, logd.ReqFlush, nil))
			p, _ := d.srv.Pending("v")
			acked := map[uint64]uint64{}
			for _, x := range p {
				acked[x.Region] = x.Gen
			}
			points = append(points, point{fs.CrashClone(vfs.CrashCloneCfg{}), acked})
		}
	}
	d.close(t)
	if len(points) < 20 {
		t.Fatalf("only %d flushes", len(points))
	}
	for i, pt := range points {
		db, err := pebble.Open("state", &pebble.Options{FS: pt.fs})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := logd.NewServer(logd.PebbleStore{DB: db}, nil)
		if err != nil {
			t.Fatalf("point %d: %v", i, err)
		}
		p, _ := srv.Pending("v")
		got := map[uint64]uint64{}
		for _, x := range p {
			got[x.Region] = x.Gen
		}
		for r, g := range pt.acked {
			if _, ok := got[r]; !ok {
				t.Fatalf("point %d: acknowledged mark of region %d (gen %d) lost", i, r, g)
			}
		}
		db.Close()
	}
}

// BenchmarkMarkFlush measures the kernel's write cycle (MARK, FLUSH, CLEAR,
// FLUSH) through the fake kernel from 8 concurrent writers, with durable
// group commit and with sync off, and prints the ratio (durable time /
// nosync time) from the same run: once over fresh regions (every MARK needs
// a sync) and once over 64 hot regions (re-MARKs of durably marked regions
// need none).
func BenchmarkMarkFlush(b *testing.B) {
	run := func(b *testing.B, disableSync bool, regionSpace int) float64 {
		fs := vfs.Default
		dir := b.TempDir()
		db, err := pebble.Open(dir, &pebble.Options{FS: fs, DisableSync: disableSync})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		srv, err := logd.NewServer(logd.PebbleStore{DB: db}, nil)
		if err != nil {
			b.Fatal(err)
		}
		k := kerneltest.New()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, k.Conn()) }()
		if _, err := k.Do(ctx, "v", 1, logd.ReqCtr, []byte("16777216 core 128 nosync")); err != nil {
			b.Fatal(err)
		}
		const writers = 8
		start := time.Now()
		var wg sync.WaitGroup
		n := b.N
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += writers {
					r := uint64(i*7919) % uint64(regionSpace)
					if _, err := k.Do(ctx, "v", 1, logd.ReqMarkRegion, logd.AppendRegions(nil, r)); err != nil {
						b.Error(err)
						return
					}
					if _, err := k.Do(ctx, "v", 1, logd.ReqFlush, nil); err != nil {
						b.Error(err)
						return
					}
					if _, err := k.Do(ctx, "v", 1, logd.ReqClearRegion, logd.AppendRegions(nil, r)); err != nil {
						b.Error(err)
						return
					}
					if _, err := k.Do(ctx, "v", 1, logd.ReqFlush, nil); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		cancel()
		<-done
		return el.Seconds() / float64(n)
	}
	for _, space := range []struct {
		name    string
		regions int
	}{{"fresh-regions", 1 << 17}, {"hot-64-regions", 64}} {
		var durable, nosync float64
		b.Run(space.name+"/durable", func(b *testing.B) {
			durable = run(b, false, space.regions)
			b.ReportMetric(4/durable, "req/s")
		})
		b.Run(space.name+"/nosync", func(b *testing.B) {
			nosync = run(b, true, space.regions)
			b.ReportMetric(4/nosync, "req/s")
		})
		if durable > 0 && nosync > 0 {
			fmt.Printf("%s: MARK+FLUSH+CLEAR+FLUSH durable/nosync time ratio %.2f (durable %.0f req/s, nosync %.0f req/s)\n",
				space.name, durable/nosync, 4/durable, 4/nosync)
		}
	}
}

// TestServerRestartKernelRetries restarts the daemon from a crash image of
// its store while the kernel's table stays loaded, and drives it the way
// dm-log-userspace does after a restart (kerneltest.Log): the first
// requests are an IN_SYNC re-sent after the kernel's timeout and the FLUSH
// that followed a MARK answered just before the crash. The region must be
// in sync (an IN_SYNC that fails counts as out of sync: the kernel would
// write it to one leg only) and pending. A log with no state at all goes
// through -ESRCH and the kernel's CTR+RESUME, and its retried IN_SYNC
// must still have room for the answer.
func TestServerRestartKernelRetries(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewCrashableMem()
	d := startDaemon(t, fs, nil)
	const args = "8192 core 8 nosync"
	check(t)(d.k.Do(ctx, "v", 1, logd.ReqCtr, []byte(args)))
	check(t)(d.k.Do(ctx, "v", 1, logd.ReqMarkRegion, logd.AppendRegions(nil, 7)))
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	d.close(t)

	d = startDaemon(t, crashed, nil)
	defer d.close(t)
	lg := &kerneltest.Log{K: d.k, UUID: "v", Luid: 1, Args: args}
	in, err := lg.InSync(ctx, 7)
	if err != nil || !in {
		t.Fatalf("IN_SYNC of region 7 after the restart: in sync %v, %v", in, err)
	}
	if _, err := lg.Call(ctx, logd.ReqFlush, nil, 0); err != nil {
		t.Fatal(err)
	}
	p, err := d.srv.Pending("v")
	if err != nil || len(p) != 1 || p[0].Region != 7 {
		t.Fatalf("pending after a MARK answered before the crash: %v, %v", p, err)
	}

	lost := &kerneltest.Log{K: d.k, UUID: "w", Luid: 2, Args: args}
	in, err = lost.InSync(ctx, 3)
	if err != nil || !in {
		t.Fatalf("IN_SYNC of a log without state, after the kernel's reconnect: in sync %v, %v", in, err)
	}
}
