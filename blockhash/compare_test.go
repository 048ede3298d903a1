//go:build unix

package blockhash_test

// Speed comparison with other CDC libraries. These imports are test-only:
// they stay out of every binary.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jotfs/fastcdc-go"
	resticchunker "github.com/restic/chunker"
	"github.com/zeebo/blake3"

	"github.com/dmsync/dmsync/blockhash"
)

var ratios = flag.Bool("ratios", false, "run the speed and cost comparisons and print their figures (slow)")

// resticPol is an irreducible polynomial for restic/chunker (restic pins one
// the same way in its tests).
const resticPol = resticchunker.Pol(0x3DA3358B4DC173)

func compareData(size int) []byte {
	b := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{42}).Read(b)
	return b
}

// contender is one chunking implementation under measurement; run chunks
// data once and returns the number of chunks.
type contender struct {
	name string
	run  func(data []byte) (int, error)
}

func contenders(p blockhash.Params) []contender {
	c, err := blockhash.NewChunker(p, blockhash.WithWorkers(1))
	if err != nil {
		panic(err)
	}
	cw, err := blockhash.NewChunker(p)
	if err != nil {
		panic(err)
	}
	return []contender{
		{"dmsync Boundary (in memory, cut points only)", func(data []byte) (int, error) {
			n := 0
			for off := 0; off < len(data); n++ {
				l, _ := c.Boundary(data[off:], true)
				off += l
			}
			return n, nil
		}},
		{"fastcdc-go (bytes.Reader, cut points only)", func(data []byte) (int, error) {
			fc, err := fastcdc.NewChunker(bytes.NewReader(data), fastcdc.Options{MinSize: int(p.Min), AverageSize: int(p.Avg), MaxSize: int(p.Max)})
			if err != nil {
				return 0, err
			}
			n := 0
			for ; ; n++ {
				if _, err := fc.Next(); errors.Is(err, io.EOF) {
					return n, nil
				} else if err != nil {
					return n, err
				}
			}
		}},
		{"restic/chunker (bytes.Reader, cut points only)", func(data []byte) (int, error) {
			rc := resticchunker.NewWithBoundaries(bytes.NewReader(data), resticPol, uint(p.Min), uint(p.Max))
			rc.SetAverageBits(16) // 64 KiB
			buf := make([]byte, p.Max)
			n := 0
			for ; ; n++ {
				if _, err := rc.Next(buf); errors.Is(err, io.EOF) {
					return n, nil
				} else if err != nil {
					return n, err
				}
			}
		}},
		{"dmsync Chunks (aligned reads + BLAKE3 + XXH64)", func(data []byte) (int, error) {
			n := 0
			_, err := c.Chunks(context.Background(), bytes.NewReader(data), uint64(len(data)), func(blockhash.Chunk, []byte) error { n++; return nil })
			return n, err
		}},
		{fmt.Sprintf("dmsync Chunks, hashing on %d workers", runtime.GOMAXPROCS(0)), func(data []byte) (int, error) {
			n := 0
			_, err := cw.Chunks(context.Background(), bytes.NewReader(data), uint64(len(data)), func(blockhash.Chunk, []byte) error { n++; return nil })
			return n, err
		}},
		{"fastcdc-go + BLAKE3 per chunk (the same BLAKE3)", func(data []byte) (int, error) {
			fc, err := fastcdc.NewChunker(bytes.NewReader(data), fastcdc.Options{MinSize: int(p.Min), AverageSize: int(p.Avg), MaxSize: int(p.Max)})
			if err != nil {
				return 0, err
			}
			n := 0
			for ; ; n++ {
				ch, err := fc.Next()
				if errors.Is(err, io.EOF) {
					return n, nil
				} else if err != nil {
					return n, err
				}
				blake3.Sum256(ch.Data)
			}
		}},
	}
}

// cpuTime returns the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestSpeedRatios measures every contender on the same 64 MiB of random
// data in 9 rounds; in each round every contender chunks the data twice, one
// after the other, so that a ratio compares runs close in time. Throughput
// is bytes per second of this process's CPU time (user + system, GC
// included), which other sessions' load on the shared machine disturbs far
// less than wall time; the multi-worker row is also given in wall time. It
// prints median MB/s and the median of the per-round ratios.
func TestSpeedRatios(t *testing.T) {
	if !*ratios {
		t.Skip("speed comparison: run with -ratios -v")
	}
	p := blockhash.DefaultParams()
	data := compareData(64 << 20)
	cs := contenders(p)
	const rounds, passes = 9, 2
	mbs := make([][]float64, len(cs))
	wall := make([][]float64, len(cs))
	chunks := make([]int, len(cs))
	for range rounds {
		for i, c := range cs {
			runtime.GC()
			start, startCPU := time.Now(), cpuTime()
			for range passes {
				n, err := c.run(data)
				if err != nil {
					t.Fatal(err)
				}
				chunks[i] = n
			}
			mbs[i] = append(mbs[i], float64(passes*len(data))/(cpuTime()-startCPU).Seconds()/1e6)
			wall[i] = append(wall[i], float64(passes*len(data))/time.Since(start).Seconds()/1e6)
		}
	}
	if chunks[0] != chunks[3] || chunks[3] != chunks[4] {
		t.Fatalf("Boundary found %d chunks, Chunks %d and %d", chunks[0], chunks[3], chunks[4])
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "chunking 64 MiB of random data, %s, %d rounds; median MB/s of CPU time, median per-round ratio:\n", p, rounds)
	for i, c := range cs {
		ref := 1
		if i >= 3 {
			ref = 5
		}
		r := make([]float64, rounds)
		for k := range r {
			r[k] = mbs[i][k] / mbs[ref][k]
		}
		fmt.Fprintf(&b, "  %-50s %7.0f MB/s  %6d chunks  %.2fx\n", c.name, median(mbs[i]), chunks[i], median(r))
	}
	wr := make([]float64, rounds)
	for k := range wr {
		wr[k] = wall[4][k] / wall[3][k]
	}
	fmt.Fprintf(&b, "  wall time: %s %.0f MB/s, %.2fx the one-worker wall time\n", cs[4].name, median(wall[4]), median(wr))
	b.WriteString("  (ratios: cut-point rows vs fastcdc-go, hashed rows vs fastcdc-go + BLAKE3)\n")
	t.Log("\n" + b.String())
}
