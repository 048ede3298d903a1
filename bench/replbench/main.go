// Command replbench measures dmsync's replication against the tools a user
// would pick instead, in one run on one machine, and prints one table: the
// figure, the peer, and the ratio. Rounds are interleaved (dmsync, then
// each peer, per round) and each figure is the median over rounds.
//
//   - Full sync of an image over loopback, fsynced on B: dmsync (mutual-TLS
//     gRPC, 4 KiB fixed chunks) against `rsync -W --fsync` to an rsync
//     daemon on 127.0.0.1 and against a raw TCP copy (io.Copy + fsync).
//   - After 1% scattered 4 KiB writes: dmsync against `rsync --inplace
//     --no-whole-file --fsync`: time, bytes on the wire per changed byte,
//     and bytes read on A.
//   - Consistency points: after -points MiB of scattered 1 MiB writes, with
//     a writer still writing during the sync, the I/O pause of the point
//     against the pause of freezing for the whole copy (the sync's time),
//     and the bytes B writes per byte sent (staging: redo log, then the
//     image).
//   - CDC throughput per core with hashing included: blockhash's chunker
//     plus BLAKE3 per chunk against jotfs/fastcdc-go plus the same BLAKE3,
//     both on one core.
//
// A's dirty log is rpctest.FakeLog (the bench measures the data path, not
// the kernel log); B's index is Pebble on disk.
//
// Every tool starts cold: the images' pages are dropped from the page
// cache before each copy, and dmsync reads A's image with O_DIRECT, as
// dmsyncd reads a volume (the mirror device's page cache is not coherent
// with writes that reach it through dm-crypt above, so dmsyncd never reads
// through it). rsync and the raw TCP copy read through the cache, with the
// kernel's readahead. -warm leaves the images cached and has dmsync read
// through the cache too: a figure for the data path alone, not for what
// dmsyncd does.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jotfs/fastcdc-go"
	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/internal/directio"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/internal/imagefile"
	"github.com/dmsync/dmsync/internal/replicate"
	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/grpctransport"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

var (
	sizeMiB     = flag.Int("size", 1024, "image size in MiB")
	rounds      = flag.Int("rounds", 5, "interleaved rounds (the median is shown)")
	regionKiB   = flag.Int("region", 4096, "dirty-log region size in KiB (the shipped default is 4 MiB)")
	dir         = flag.String("dir", "", "work directory (default: a new one under /var/tmp)")
	cdcMiB      = flag.Int("cdc", 256, "MiB chunked per CDC measurement")
	inflight    = flag.Int("inflight", 0, "batches in flight (0: the sender's default)")
	batchMiB    = flag.Int("batch", 0, "MiB per batch (0: the sender's default)")
	batchRead   = flag.Int("batchread", 0, "MiB of the volume one batch covers at most (0: the sender's default)")
	pointMiB    = flag.Int("points", 256, "MiB written between two consistency points")
	memtableMiB = flag.Int("memtable", 0, "B's Pebble memtable size in MiB (0: dmsyncd's default, 4)")
	cacheMiB    = flag.Int("cache", 0, "B's Pebble block cache in MiB (0: dmsyncd's default)")
	fixedKiB    = flag.Int("fixed", replicate.FixedChunkSize>>10, "fixed chunk size in KiB (the default is dmsyncd's)")
	cpuProf     = flag.String("cpuprofile", "", "write a CPU profile of dmsync's full syncs to this file (and of its delta syncs to FILE.delta)")
	traceFile   = flag.String("trace", "", "write an execution trace of dmsync's last full sync to this file (go tool trace), and of its last delta sync to FILE.delta")
	warm        = flag.Bool("warm", false, "leave the images in the page cache and read A's through it (default: each tool starts cold, and dmsync reads A with O_DIRECT, as dmsyncd reads a volume)")
)

const volume = "bench-volume"

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "replbench:", err)
		os.Exit(1)
	}
}

type sample map[string][]float64

func (s sample) add(k string, v float64) { s[k] = append(s[k], v) }

func (s sample) med(k string) float64 {
	v := slices.Clone(s[k])
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func run() error {
	size := uint64(*sizeMiB) << 20
	region := uint64(*regionKiB) << 10
	work := *dir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("/var/tmp", "replbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	mode := "cold: A read with O_DIRECT, as dmsyncd does"
	if *warm {
		mode = "warm: A read through the page cache"
	}
	fmt.Printf("replbench: %d MiB image, %d KiB regions, %d rounds, %s, %d CPUs, load %s", *sizeMiB, *regionKiB, *rounds, mode, runtime.NumCPU(), load)
	src := filepath.Join(work, "a.img")
	if err := makeImage(src, size); err != nil {
		return err
	}
	rs, err := startRsyncd(work)
	if err != nil {
		return err
	}
	defer rs.stop()
	s := sample{}
	rng := rand.New(rand.NewPCG(1, 2))
	prev := ""
	for r := range *rounds {
		fmt.Fprintf(os.Stderr, "round %d/%d\n", r+1, *rounds)
		// Full sync, interleaved: dmsync, rsync -W, raw TCP.
		// Every tool's copy replaces its copy of the round before, just
		// before it runs (rsync's b.img, tcp.img, and here dmsync's
		// replica): on a VM whose host reclaims guest pages freed for a
		// while, a copy into freshly freed pages costs the same for each.
		os.RemoveAll(prev)
		d, err := newDmsync(work, src, size, region)
		if err != nil {
			return err
		}
		if err := cold(src); err != nil {
			return err
		}
		stopProf := profile(*cpuProf)
		stopTrace := startTrace(*traceFile)
		cpu0, busy0 := cpuSeconds(), machineBusy()
		t, wire, _, err := d.sync()
		cpu, busy := cpuSeconds()-cpu0, machineBusy()-busy0
		stopTrace()
		stopProf()
		if err != nil {
			return fmt.Errorf("dmsync full sync: %w", err)
		}
		s.add("full.dmsync", t)
		s.add("full.dmsync.wire", float64(wire)/float64(size))
		rsyncB := filepath.Join(rs.root, "b.img")
		os.Remove(rsyncB)
		if err := cold(src); err != nil {
			return err
		}
		rbusy0 := machineBusy()
		t, _, err = rs.copy(src, "-W")
		rbusy := machineBusy() - rbusy0
		if err != nil {
			return fmt.Errorf("rsync -W: %w", err)
		}
		s.add("full.rsync", t)
		if err := cold(src); err != nil {
			return err
		}
		t, err = tcpCopy(src, filepath.Join(work, "tcp.img"))
		if err != nil {
			return err
		}
		s.add("full.tcp", t)
		fmt.Fprintf(os.Stderr, "  full sync: dmsync %.2f s (%.2f s of CPU, machine busy %.2f s), rsync -W %.2f s (machine busy %.2f s), raw TCP %.2f s\n", s["full.dmsync"][r], cpu, busy, s["full.rsync"][r], rbusy, t)

		// 1% scattered 4 KiB writes, then each tool catches up.
		changed, err := scatter(src, size, region, d.log, rng)
		if err != nil {
			return err
		}
		if err := cold(src); err != nil {
			return err
		}
		stopProf = profile(deltaProfile(*cpuProf))
		stopTrace = startTrace(deltaProfile(*traceFile))
		t, wire, read, err := d.sync()
		stopTrace()
		stopProf()
		if err != nil {
			return fmt.Errorf("dmsync delta: %w", err)
		}
		if err := sameFile(src, d.image); err != nil {
			return fmt.Errorf("dmsync delta: %w", err)
		}
		s.add("delta.dmsync", t)
		s.add("delta.dmsync.wire", float64(wire)/float64(changed))
		s.add("delta.dmsync.read", float64(read)/float64(size))
		if err := cold(src, rsyncB); err != nil {
			return err
		}
		t, rsWire, err := rs.copy(src, "--inplace", "--no-whole-file")
		if err != nil {
			return fmt.Errorf("rsync delta: %w", err)
		}
		if err := sameFile(src, rsyncB); err != nil {
			return fmt.Errorf("rsync delta: %w", err)
		}
		s.add("delta.rsync", t)
		s.add("delta.rsync.wire", float64(rsWire)/float64(changed))

		// Consistency points: writes, then a sync with a writer running.
		t, pause, wroteB, sent, err := d.pointRound(src, size, region, min(uint64(*pointMiB)<<20, size/2), rng)
		if err != nil {
			return fmt.Errorf("dmsync point: %w", err)
		}
		s.add("point.sync", t)
		s.add("point.pause", pause.Seconds())
		s.add("point.staging", float64(wroteB)/float64(max(sent, 1)))
		if _, err := d.snd.RunOnce(context.Background()); err != nil {
			return fmt.Errorf("dmsync after the point: %w", err)
		}
		if err := sameFile(src, d.image); err != nil {
			return fmt.Errorf("dmsync after the point: %w", err)
		}
		d.close()
		prev = d.base
	}
	cdcOurs, cdcPeer, err := cdcPerCore(uint64(*cdcMiB) << 20)
	if err != nil {
		return err
	}
	load, _ = os.ReadFile("/proc/loadavg")
	mbps := func(k string) float64 { return float64(size) / s.med(k) / 1e6 }
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tdmsync\tpeer\tpeer value\tratio (goal)")
	fmt.Fprintf(tw, "full sync %d MiB, fsynced on B\t%.0f MB/s\trsync -W (daemon, 127.0.0.1)\t%.0f MB/s\t%.2fx (>= 1.0x)\n", *sizeMiB, mbps("full.dmsync"), mbps("full.rsync"), s.med("full.rsync")/s.med("full.dmsync"))
	fmt.Fprintf(tw, "full sync %d MiB, fsynced on B\t%.0f MB/s\traw TCP copy + fsync\t%.0f MB/s\t%.2fx\n", *sizeMiB, mbps("full.dmsync"), mbps("full.tcp"), s.med("full.tcp")/s.med("full.dmsync"))
	fmt.Fprintf(tw, "full sync: wire bytes / image bytes\t%.3f\t\t\t\n", s.med("full.dmsync.wire"))
	fmt.Fprintf(tw, "after 1%% scattered 4 KiB writes: time\t%.2f s\trsync --inplace --no-whole-file\t%.2f s\t%.2fx faster (>= 5x)\n", s.med("delta.dmsync"), s.med("delta.rsync"), s.med("delta.rsync")/s.med("delta.dmsync"))
	fmt.Fprintf(tw, "after 1%% writes: wire bytes / changed bytes\t%.2f\trsync --inplace --no-whole-file\t%.2f\t(dmsync <= 1.2)\n", s.med("delta.dmsync.wire"), s.med("delta.rsync.wire"))
	fmt.Fprintf(tw, "after 1%% writes: bytes read on A / image\t%.2f\trsync (reads the whole file by design)\t1.00\t%.2fx less\n", s.med("delta.dmsync.read"), 1/s.med("delta.dmsync.read"))
	// The bench's freezer is a lock, so the pause is dmsync's own share of
	// it (the capture read while frozen); a kernel suspend adds its own.
	fmt.Fprintf(tw, "consistency point after %d MiB of writes, a writer running: pause (capture while frozen)\t%.3f ms\tfreeze for the whole copy (the sync: %.2f s)\t%.0f ms\t%.0fx shorter\n",
		min(uint64(*pointMiB), uint64(*sizeMiB)/2), s.med("point.pause")*1e3, s.med("point.sync"), s.med("point.sync")*1e3, s.med("point.sync")/max(s.med("point.pause"), 1e-6))
	fmt.Fprintf(tw, "consistency point: bytes written on B / byte sent\t%.2f\twriting in place (no point in time)\t1.00\t%.2fx (staging)\n", s.med("point.staging"), s.med("point.staging"))
	fmt.Fprintf(tw, "CDC + BLAKE3 per core (avg 64 KiB)\t%.0f MB/s\tjotfs/fastcdc-go + BLAKE3\t%.0f MB/s\t%.2fx (>= 1.3x)\n", cdcOurs, cdcPeer, cdcOurs/cdcPeer)
	tw.Flush()
	fmt.Printf("load at the end: %s", load)
	return nil
}

// profile starts a CPU profile into path (appending to nothing: each call
// overwrites it, so the file holds the last round) and returns its stop.
func profile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "replbench: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "replbench: cpu profile:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// startTrace starts an execution trace into path (replacing an earlier
// round's) and returns what stops it.
func startTrace(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "replbench: trace:", err)
		return func() {}
	}
	if err := trace.Start(f); err != nil {
		fmt.Fprintln(os.Stderr, "replbench: trace:", err)
		f.Close()
		return func() {}
	}
	return func() { trace.Stop(); f.Close() }
}

func deltaProfile(path string) string {
	if path == "" {
		return ""
	}
	return path + ".delta"
}

// cold drops the files' pages from the page cache (after writing back
// what is dirty), so that the next tool reads them from the disk, as it
// would a volume it has not read lately; with -warm it does nothing.
func cold(paths ...string) error {
	if *warm {
		return nil
	}
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("evict %s from the page cache: %w", p, err)
		}
		err = f.Sync()
		if err == nil {
			err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("evict %s from the page cache: %w", p, err)
		}
	}
	return nil
}

func makeImage(path string, size uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{42})
	buf := make([]byte, 4<<20)
	for n := uint64(0); n < size; n += uint64(len(buf)) {
		_, _ = r.Read(buf)
		if _, err := f.Write(buf[:min(uint64(len(buf)), size-n)]); err != nil {
			return err
		}
	}
	return f.Sync()
}

// scatter rewrites 1% of the image's 4 KiB blocks at random and records
// each write in the fake dirty log; it returns the bytes changed.
func scatter(path string, size, region uint64, log *rpctest.FakeLog, rng *rand.Rand) (uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	blocks := size / 4096
	want := blocks / 100
	seen := map[uint64]bool{}
	buf := make([]byte, 4096)
	for uint64(len(seen)) < want {
		b := rng.Uint64N(blocks)
		if seen[b] {
			continue
		}
		seen[b] = true
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf, int64(b*4096)); err != nil {
			return 0, err
		}
		log.Write(volume, b*4096/region)
	}
	return want * 4096, f.Sync()
}

func sameFile(a, b string) error {
	x, err := os.ReadFile(a)
	if err != nil {
		return err
	}
	y, err := os.ReadFile(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(x, y) {
		return fmt.Errorf("%s and %s differ", a, b)
	}
	return nil
}

// dmsync is one sender and one receiver over loopback mutual TLS.
type dmsync struct {
	// frozen is write-locked while the sender freezes the volume; the
	// bench's writes take its read lock, as writes to a suspended device
	// wait.
	frozen sync.RWMutex
	recv   *rpc.Receiver
	log    *rpctest.FakeLog
	image  string
	db     *pebble.DB
	srv    interface{ Stop() }
	client *grpctransport.Client
	snd    *rpc.Sender
	wire   *atomic.Int64
	srcF   interface {
		io.ReaderAt
		io.Closer
	}
	img  *os.File
	base string
}

func newDmsync(work, src string, size, region uint64) (*dmsync, error) {
	base, err := os.MkdirTemp(work, "dmsync-")
	if err != nil {
		return nil, err
	}
	a, err := identity.Init(filepath.Join(base, "a"))
	if err != nil {
		return nil, err
	}
	b, err := identity.Init(filepath.Join(base, "b"))
	if err != nil {
		return nil, err
	}
	d := &dmsync{log: rpctest.NewFakeLog(), image: filepath.Join(base, "b.img"), wire: &atomic.Int64{}, base: base}
	d.log.AddVolume(volume, region, (size+region-1)/region)
	// B's image created and opened as dmsyncd's receiver does.
	if err := imagefile.Create(d.image, size); err != nil {
		return nil, err
	}
	img, err := os.OpenFile(d.image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	d.img = img
	// B's store opened as dmsyncd's replicator opens it.
	cache := int64(pebble.ReplicaCacheSize)
	if *cacheMiB > 0 {
		cache = int64(*cacheMiB) << 20
	}
	if d.db, err = pebble.Open(filepath.Join(base, "b.pebble"), &pebble.Options{MemTableSize: uint64(*memtableMiB) << 20, CacheSize: cache}); err != nil {
		return nil, err
	}
	staging := filepath.Join(base, "staging")
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, err
	}
	recv, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: pebble.NewReplicaStore(d.db.Raw()), StagingDir: staging, Volumes: []rpc.ReceiveVolume{{Name: volume, Image: img, Size: size, Senders: []string{a.ID}}}})
	if err != nil {
		return nil, err
	}
	d.recv = recv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpctransport.NewServer(b, recv, slog.New(slog.DiscardHandler))
	go srv.Serve(ln)
	d.srv = srv
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return countConn{c, d.wire}, nil
	}
	if d.client, err = grpctransport.Dial(ln.Addr().String(), a, b.ID, slog.New(slog.DiscardHandler), grpctransport.DialOptions{Dialer: dial}); err != nil {
		return nil, err
	}
	// A's volume is read as dmsyncd reads it: with O_DIRECT (a block
	// device's page cache is not kept coherent with writes that reach it
	// through the dm devices above). -warm reads it through the cache.
	if *warm {
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		d.srcF = f
	} else if d.srcF, err = directio.Open(src, false); err != nil {
		return nil, err
	}
	d.snd, err = rpc.NewSender(rpc.SenderConfig{
		Volume: volume, Peer: b.ID, Source: d.srcF, Size: size, Log: d.log,
		Chunker: rpc.FixedChunker{Size: uint32(*fixedKiB) << 10}, Transport: d.client, MaxAttempts: 3,
		Inflight: *inflight, MaxBatchBytes: uint64(*batchMiB) << 20, MaxBatchRead: uint64(*batchRead) << 20,
		Freezer: d.freeze,
	})
	return d, err
}

func (d *dmsync) freeze(context.Context, time.Duration) (rpc.Freeze, error) {
	d.frozen.Lock()
	at := time.Now()
	var once sync.Once
	return rpc.Freeze{At: at, Thaw: func(context.Context) (bool, time.Duration, error) {
		once.Do(d.frozen.Unlock)
		return true, time.Since(at), nil
	}}, nil
}

// pointRound writes n bytes in 1 MiB pieces at random, then syncs with a
// writer still writing 1 MiB every 50 ms. It returns the sync's time, the
// point's pause, the bytes B wrote (staging and image) and the bytes sent.
func (d *dmsync) pointRound(src string, size, region, n uint64, rng *rand.Rand) (float64, time.Duration, uint64, uint64, error) {
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	write := func() error {
		d.frozen.RLock()
		defer d.frozen.RUnlock()
		off := rng.Uint64N(size/uint64(len(buf))) * uint64(len(buf))
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		for r := off / region; r <= (off+uint64(len(buf))-1)/region; r++ {
			d.log.Mark(volume, r)
		}
		_, err := f.WriteAt(buf, int64(off))
		for r := off / region; r <= (off+uint64(len(buf))-1)/region; r++ {
			d.log.Clear(volume, r)
		}
		return err
	}
	for w := uint64(0); w < n; w += uint64(len(buf)) {
		if err := write(); err != nil {
			return 0, 0, 0, 0, err
		}
	}
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- nil
				return
			case <-t.C:
				if err := write(); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	rs0, sent0, points0 := d.recv.Stats(), d.snd.Stats().BytesSent, d.snd.Points().Points
	start := time.Now()
	d.snd.RequestPoint()
	_, err = d.snd.RunOnce(context.Background())
	el := time.Since(start).Seconds()
	close(stop)
	if werr := <-done; err == nil {
		err = werr
	}
	if err != nil {
		return 0, 0, 0, 0, err
	}
	p := d.snd.Points()
	if p.Points == points0 {
		return 0, 0, 0, 0, fmt.Errorf("no consistency point was made (%+v)", p)
	}
	rs := d.recv.Stats()
	wrote := (rs.Staged - rs0.Staged) + (rs.Applied - rs0.Applied) + (rs.InPlace - rs0.InPlace)
	return el, p.LastPause, wrote, d.snd.Stats().BytesSent - sent0, nil
}

// sync sends everything pending; it returns seconds, wire bytes and bytes
// read from the source.
func (d *dmsync) sync() (float64, uint64, uint64, error) {
	w0, r0 := d.wire.Load(), d.snd.Stats().BytesRead
	start := time.Now()
	st, err := d.snd.RunOnce(context.Background())
	return time.Since(start).Seconds(), uint64(d.wire.Load() - w0), st.BytesRead - r0, err
}

func (d *dmsync) close() {
	d.client.Close()
	d.srv.Stop()
	d.db.Close()
	d.srcF.Close()
	d.img.Close()
}

type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// rsyncd is an rsync daemon on 127.0.0.1 serving one module.
type rsyncd struct {
	root string
	port int
	cmd  *exec.Cmd
}

func startRsyncd(work string) (*rsyncd, error) {
	if _, err := exec.LookPath("rsync"); err != nil {
		return nil, fmt.Errorf("rsync not installed (apt-get install rsync): %w", err)
	}
	r := &rsyncd{root: filepath.Join(work, "rsync")}
	if err := os.MkdirAll(r.root, 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(work, "rsyncd.conf")
	body := fmt.Sprintf("use chroot = no\nuid = 0\ngid = 0\npid file = %s/rsyncd.pid\n[b]\npath = %s\nread only = no\n", work, r.root)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return nil, err
	}
	r.cmd = exec.Command("rsync", "--daemon", "--no-detach", "--address=127.0.0.1", "--port="+strconv.Itoa(r.port), "--config="+conf)
	r.cmd.Stderr = os.Stderr
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	for range 100 {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
			return r, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.stop()
	return nil, fmt.Errorf("rsync daemon did not start on port %d", r.port)
}

func (r *rsyncd) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

var sentRE = regexp.MustCompile(`Total bytes sent: ([\d,]+)`)

// copy runs rsync src to the module's b.img with --fsync and the given
// flags; it returns seconds and the bytes rsync sent.
func (r *rsyncd) copy(src string, flags ...string) (float64, uint64, error) {
	args := append([]string{"--fsync", "--stats", "--ignore-times"}, flags...)
	args = append(args, src, fmt.Sprintf("rsync://127.0.0.1:%d/b/b.img", r.port))
	start := time.Now()
	out, err := exec.Command("rsync", args...).CombinedOutput()
	t := time.Since(start).Seconds()
	if err != nil {
		return 0, 0, fmt.Errorf("rsync %s: %w: %s", strings.Join(args, " "), err, out)
	}
	m := sentRE.FindSubmatch(out)
	if m == nil {
		return t, 0, fmt.Errorf("rsync printed no byte count: %s", out)
	}
	n, _ := strconv.ParseUint(strings.ReplaceAll(string(m[1]), ",", ""), 10, 64)
	return t, n, nil
}

// tcpCopy copies src over loopback TCP into dst and fsyncs it.
func tcpCopy(src, dst string) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		f, err := os.Create(dst)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, c); err != nil {
			done <- err
			return
		}
		done <- f.Sync()
	}()
	start := time.Now()
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(c, f); err != nil {
		return 0, err
	}
	c.Close()
	if err := <-done; err != nil {
		return 0, err
	}
	return time.Since(start).Seconds(), nil
}

// cdcPerCore chunks n bytes on one core with blockhash's chunker and with
// fastcdc-go (same min/avg/max), hashing every chunk with BLAKE3, and
// returns both rates in MB/s (medians of interleaved rounds).
func cdcPerCore(n uint64) (float64, float64, error) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	data := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{9}).Read(data)
	p := blockhash.DefaultParams()
	c, err := blockhash.NewChunker(p)
	if err != nil {
		return 0, 0, err
	}
	s := sample{}
	var sink rpc.ID
	for range *rounds {
		start := time.Now()
		for off := 0; off < len(data); {
			k, ok := c.Boundary(data[off:], true)
			if !ok || k <= 0 {
				return 0, 0, fmt.Errorf("blockhash: no boundary at %d", off)
			}
			sink = rpc.Sum(data[off : off+k])
			off += k
		}
		s.add("ours", float64(n)/time.Since(start).Seconds()/1e6)
		start = time.Now()
		fc, err := fastcdc.NewChunker(bytes.NewReader(data), fastcdc.Options{MinSize: int(p.Min), AverageSize: int(p.Avg), MaxSize: int(p.Max)})
		if err != nil {
			return 0, 0, err
		}
		for {
			ch, err := fc.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return 0, 0, err
			}
			sink = rpc.Sum(ch.Data)
		}
		s.add("peer", float64(n)/time.Since(start).Seconds()/1e6)
	}
	_ = sink
	return s.med("ours"), s.med("peer"), nil
}

// machineBusy returns the CPU seconds the whole machine spent busy (user,
// nice, system, irq and softirq in /proc/stat), so that a peer made of
// several processes (rsync's sender, receiver and generator, its daemon)
// and the kernel's own work for each tool can be compared; 0 if unknown.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks float64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0
		}
		ticks += v
	}
	return ticks / 100 // USER_HZ
}

// cpuSeconds returns the user and system CPU time this process used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
