package grpctransport

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/rpc"
)

// benchSize is the image size: 256 MiB, or DMSYNC_BENCH_MB.
func benchSize() uint64 {
	if mb, err := strconv.Atoi(os.Getenv("DMSYNC_BENCH_MB")); err == nil && mb > 0 {
		return uint64(mb) << 20
	}
	return 256 << 20
}

// countingDialer counts the bytes the sender puts on the wire.
type countingDialer struct{ sent atomic.Int64 }

type countingConn struct {
	net.Conn
	d *countingDialer
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.d.sent.Add(int64(n))
	return n, err
}

func (d *countingDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, d: d}, nil
}

// tcpCopy copies a file over loopback TCP into dst and fsyncs it: the
// whole-file copy a replication tool is measured against.
func tcpCopy(b *testing.B, src, dst string) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
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
		b.Fatal(err)
	}
	defer f.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(c, f); err != nil {
		b.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// fullScan is a bdsync-style pass: both sides read and hash every block;
// the hashes cross the wire, then the differing blocks. It returns the
// bytes read (both sides) and sent.
func fullScan(b *testing.B, src, dst string, block int) (read, sent uint64, d time.Duration) {
	start := time.Now()
	hashes := func(path string) []rpc.ID {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		var out []rpc.ID
		buf := make([]byte, block)
		for {
			n, err := io.ReadFull(f, buf)
			if n > 0 {
				out = append(out, rpc.Sum(buf[:n]))
				read += uint64(n)
			}
			if err != nil {
				break
			}
		}
		return out
	}
	a, r := hashes(src), hashes(dst)
	sent = uint64(len(r)) * 32 // receiver's hash list
	for i := range a {
		if i >= len(r) || a[i] != r[i] {
			sent += uint64(block)
		}
	}
	return read, sent, time.Since(start)
}

// BenchmarkReplicate measures, in one run: the initial sync of an image
// against a whole-file copy over loopback TCP, and after 1% random 4 KiB
// changes, the bytes dmsync reads and sends against a full-scan pass.
// Run with -benchtime=1x; DMSYNC_BENCH_MB sets the image size.
func BenchmarkReplicate(b *testing.B) {
	cdc := func(b *testing.B) rpc.Chunker {
		c, err := blockhash.NewChunker(blockhash.DefaultParams())
		if err != nil {
			b.Fatal(err)
		}
		return rpc.NewCDCChunker(c, nil)
	}
	for _, cfg := range []struct {
		name    string
		region  uint64
		chunker func(*testing.B) rpc.Chunker
	}{
		{"region64k-fixed4k", 64 << 10, func(*testing.B) rpc.Chunker { return rpc.FixedChunker{Size: 4 << 10} }},
		{"region64k-fixed16k", 64 << 10, func(*testing.B) rpc.Chunker { return rpc.FixedChunker{Size: 16 << 10} }},
		{"region64k-cdc16k-64k-256k", 64 << 10, cdc},
	} {
		b.Run(cfg.name, func(b *testing.B) {
			for range b.N {
				benchOnce(b, benchSize(), cfg.region, cfg.chunker(b))
			}
		})
	}
}

func benchOnce(b *testing.B, size, region uint64, chunker rpc.Chunker) {
	s := newSenderNode(b, size, region, 4096, 42)
	s.chunker = chunker
	s.batchBytes = 16 << 20
	r := newReceiverNode(b, size, s.id.ID)
	r.start()
	cd := &countingDialer{}
	snd := s.sender(s.dial(r, DialOptions{Dialer: cd.dial}), r.id.ID)
	ctx := context.Background()

	oldCopy := filepath.Join(b.TempDir(), "copy.img")
	copyTime := tcpCopy(b, s.path, oldCopy)
	start := time.Now()
	st0, err := snd.RunOnce(ctx)
	if err != nil {
		b.Fatal(err)
	}
	syncTime := time.Since(start)
	b.Logf("initial: %+v in %v", st0, syncTime)
	b.ReportMetric(syncTime.Seconds()/copyTime.Seconds(), "initial/tcpcopy-time")
	b.ReportMetric(float64(cd.sent.Load())/float64(size), "initial-wire/size")
	b.ReportMetric(float64(size)/syncTime.Seconds()/(1<<20), "initial-MiB/s")

	// 1% of the 4 KiB blocks, rewritten at random.
	blocks := size / 4096
	changes := blocks / 100
	rng := rand.New(rand.NewPCG(99, 99))
	buf := make([]byte, 4096)
	changed := map[uint64]bool{}
	for uint64(len(changed)) < changes {
		blk := rng.Uint64N(blocks)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := s.src.WriteAt(buf, int64(blk*4096)); err != nil {
			b.Fatal(err)
		}
		changed[blk] = true
		s.log.Write(testVol, blk*4096/region)
	}
	changedBytes := float64(changes * 4096)
	wire0 := cd.sent.Load()
	start = time.Now()
	st1, err := snd.RunOnce(ctx)
	if err != nil {
		b.Fatal(err)
	}
	deltaTime := time.Since(start)
	read := st1.BytesRead - st0.BytesRead
	payload := st1.BytesSent - st0.BytesSent
	wire := uint64(cd.sent.Load() - wire0)
	// The full scan compares the changed source with the whole-file copy
	// made before the changes (the state the replica had).
	fsRead, fsSent, fsTime := fullScan(b, s.path, oldCopy, 4096)
	equalFiles(b, s.path, r.path)
	b.ReportMetric(float64(fsRead)/float64(read), "fullscan/dmsync-read")
	b.ReportMetric(float64(read)/changedBytes, "dmsync-read/changed")
	b.ReportMetric(float64(payload)/changedBytes, "payload/changed")
	b.ReportMetric(float64(wire)/changedBytes, "wire/changed")
	b.ReportMetric(float64(fsSent)/changedBytes, "fullscan-sent/changed")
	b.ReportMetric(fsTime.Seconds()/deltaTime.Seconds(), "fullscan/dmsync-time")
}
