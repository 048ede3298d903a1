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
	"strings"
	"testing"

	"github.com/jotfs/fastcdc-go"
	resticchunker "github.com/restic/chunker"
	"lukechampine.com/blake3"

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
	c, err := blockhash.NewChunker(p)
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
		{"fastcdc-go + BLAKE3 per chunk", func(data []byte) (int, error) {
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

// TestSpeedRatios measures every contender on the same 64 MiB of random
// data in alternating rounds (the best round counts, so that other load on
// the machine hurts all alike) and prints MB/s and ratios to fastcdc-go.
func TestSpeedRatios(t *testing.T) {
	if !*ratios {
		t.Skip("speed comparison: run with -ratios -v")
	}
	p := blockhash.DefaultParams()
	data := compareData(64 << 20)
	cs := contenders(p)
	best := make([]float64, len(cs))
	chunks := make([]int, len(cs))
	for round := 0; round < 5; round++ {
		for i, c := range cs {
			r := testing.Benchmark(func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					n, err := c.run(data)
					if err != nil {
						b.Fatal(err)
					}
					chunks[i] = n
				}
			})
			mbs := float64(r.Bytes) * float64(r.N) / r.T.Seconds() / 1e6
			best[i] = max(best[i], mbs)
		}
	}
	if chunks[0] != chunks[3] {
		t.Fatalf("Boundary found %d chunks, Chunks %d", chunks[0], chunks[3])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "chunking 64 MiB of random data, %s, best of 5 alternating rounds, one core:\n", p)
	for i, c := range cs {
		ref := best[1]
		if i >= 3 {
			ref = best[4]
		}
		fmt.Fprintf(&b, "  %-50s %7.0f MB/s  %6d chunks  %.2fx\n", c.name, best[i], chunks[i], best[i]/ref)
	}
	b.WriteString("  (ratios: cut-point rows vs fastcdc-go, hashed rows vs fastcdc-go + BLAKE3)\n")
	t.Log("\n" + b.String())
}
