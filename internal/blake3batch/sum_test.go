package blake3batch

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/zeebo/blake3"
)

func TestSumMatchesBLAKE3(t *testing.T) {
	for _, size := range []int{Size4K, Size16K, 8 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testSum(t, size) })
	}
}

func testSum(t *testing.T, size int) {
	if !useAVX512 {
		t.Log("no AVX-512 here: this checks the zeebo/blake3 path only")
	}
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 64*size+100)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	cases := map[string][]int{
		"none":        {},
		"one":         {0},
		"four":        {0, size, 2 * size, 3 * size},
		"five":        {0, size, 2 * size, 3 * size, 4 * size},
		"unaligned":   {1, size + 3, 100, 63 * size},
		"descending":  {60 * size, 40 * size, 20 * size, 3},
		"same":        {size, size, size, size, size, size, size, size},
		"overlapping": {0, 1, 2, 3, 1024, 2048, 3072, 4095, 17},
		"last":        {len(data) - size, 0, len(data) - size - 1, 5},
	}
	for name, offs := range cases {
		t.Run(name, func(t *testing.T) {
			ids := make([][32]byte, len(offs))
			Sum(data, size, offs, ids)
			for i, o := range offs {
				if want := blake3.Sum256(data[o : o+size]); ids[i] != want {
					t.Errorf("block %d at %d: got %x, want %x", i, o, ids[i][:8], want[:8])
				}
			}
		})
	}
}

func TestSumPanicsOutside(t *testing.T) {
	for _, size := range []int{Size4K, Size16K} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("size %d: a block past the end of data did not panic", size)
				}
			}()
			Sum(make([]byte, 4*size), size, []int{0, 1, 2, 3*size + 1}, make([][32]byte, 4))
		}()
	}
}

func FuzzSum(f *testing.F) {
	f.Add([]byte("seed"), false, uint16(0), uint16(5000), uint16(1), uint16(9999))
	f.Add([]byte{0xff, 0}, true, uint16(7), uint16(5000), uint16(1), uint16(65535))
	f.Fuzz(func(t *testing.T, seed []byte, big bool, a, b, c, d uint16) {
		size := Size4K
		if big {
			size = Size16K
		}
		data := make([]byte, 16*size)
		for i := range data {
			if len(seed) > 0 {
				data[i] = seed[i%len(seed)] ^ byte(i>>8)
			}
		}
		lim := len(data) - size + 1
		offs := []int{int(a) % lim, int(b) % lim, int(c) % lim, int(d) % lim}
		ids := make([][32]byte, 4)
		Sum(data, size, offs, ids)
		for i, o := range offs {
			if want := blake3.Sum256(data[o : o+size]); ids[i] != want {
				t.Fatalf("block at %d: got %x, want %x", o, ids[i][:8], want[:8])
			}
		}
	})
}

// BenchmarkSum: the kernels against zeebo/blake3 one block at a time, on
// 1 MiB of blocks (go test -bench Sum ./internal/blake3batch).
func BenchmarkSum(b *testing.B) {
	data := make([]byte, 1<<20)
	for _, size := range []int{Size4K, Size16K} {
		offs := make([]int, len(data)/size)
		for i := range offs {
			offs[i] = i * size
		}
		ids := make([][32]byte, len(offs))
		b.Run(fmt.Sprintf("%dK/batch", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				Sum(data, size, offs, ids)
			}
		})
		b.Run(fmt.Sprintf("%dK/zeebo", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				for i, o := range offs {
					ids[i] = blake3.Sum256(data[o : o+size])
				}
			}
		})
	}
}
