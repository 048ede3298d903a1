package rpc

import (
	"math/rand/v2"
	"testing"

	"lukechampine.com/blake3"
)

func TestSumMatchesBlake3(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, simdBytes+3000)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for n := 0; n <= len(data); n++ {
		if got, want := Sum(data[:n]), ID(blake3.Sum256(data[:n])); got != want {
			t.Fatalf("length %d: %v, want %v", n, got, want)
		}
	}
}

func FuzzSum(f *testing.F) {
	f.Add([]byte("x"), uint16(4096))
	f.Fuzz(func(t *testing.T, seed []byte, n uint16) {
		data := make([]byte, int(n)%(simdBytes+2048))
		for i := range data {
			if len(seed) > 0 {
				data[i] = seed[i%len(seed)] ^ byte(i)
			}
		}
		if Sum(data) != ID(blake3.Sum256(data)) {
			t.Fatalf("length %d differs", len(data))
		}
	})
}

func benchSum(b *testing.B, n int, f func([]byte) ID) {
	d := make([]byte, n)
	b.SetBytes(int64(n))
	for range b.N {
		f(d)
	}
}

func lib(d []byte) ID { return ID(blake3.Sum256(d)) }

// BenchmarkSum compares Sum with blake3.Sum256 on chunk-sized inputs; the
// ratio is in the MB/s columns of the /sum and /lib pairs.
func BenchmarkSum(b *testing.B) {
	for _, n := range []int{4 << 10, 16 << 10, 64 << 10} {
		b.Run("sum-"+itoa(n), func(b *testing.B) { benchSum(b, n, Sum) })
		b.Run("lib-"+itoa(n), func(b *testing.B) { benchSum(b, n, lib) })
	}
}

func itoa(n int) string {
	return string(rune('0'+n>>10/10%10)) + string(rune('0'+n>>10%10)) + "k"
}
