package rpc

import (
	"math/rand/v2"
	"testing"

	ref "lukechampine.com/blake3"
)

// refSum is the reference BLAKE3-256 of the previous implementation.
func refSum(d []byte) ID { return ID(ref.Sum256(d)) }

// TestSumMatchesReference: every length up to 70 KiB (every SIMD and tree
// boundary of both modules) digests the same as lukechampine.com/blake3.
func TestSumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 70<<10)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for n := 0; n <= len(data); n++ {
		if got, want := Sum(data[:n]), refSum(data[:n]); got != want {
			t.Fatalf("length %d: %v, want %v", n, got, want)
		}
	}
	for _, n := range []int{1 << 20, 4<<20 + 17} {
		big := make([]byte, n)
		for i := range big {
			big[i] = byte(i * 31)
		}
		if Sum(big) != refSum(big) {
			t.Fatalf("length %d differs", n)
		}
	}
}

func FuzzSum(f *testing.F) {
	f.Add([]byte("x"), uint32(4096))
	f.Fuzz(func(t *testing.T, seed []byte, n uint32) {
		data := make([]byte, int(n%(1<<20)))
		for i := range data {
			if len(seed) > 0 {
				data[i] = seed[i%len(seed)] ^ byte(i)
			}
		}
		if Sum(data) != refSum(data) {
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

// BenchmarkSum compares Sum with the previous module on chunk-sized
// inputs; the ratio is in the MB/s columns of the sum and ref pairs.
func BenchmarkSum(b *testing.B) {
	for _, n := range []int{4 << 10, 16 << 10, 64 << 10, 1 << 20} {
		b.Run("sum-"+itoa(n), func(b *testing.B) { benchSum(b, n, Sum) })
		b.Run("ref-"+itoa(n), func(b *testing.B) { benchSum(b, n, refSum) })
	}
}

func itoa(n int) string {
	return string(rune('0'+n>>10/1000%10)) + string(rune('0'+n>>10/100%10)) + string(rune('0'+n>>10/10%10)) + string(rune('0'+n>>10%10)) + "k"
}
