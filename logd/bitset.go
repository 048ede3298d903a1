package logd

import "math/bits"

// ChunkBits is how many regions one persisted bitmap chunk covers; the
// store writes whole chunks (ChunkBits/8 = 512 bytes).
const ChunkBits = 4096

const chunkWords = ChunkBits / 64

// bitset is a fixed-size bitmap over regions with a population count.
type bitset struct {
	words []uint64
	n     uint64 // regions
	ones  uint64
}

func newBitset(n uint64) bitset {
	return bitset{words: make([]uint64, (n+63)/64), n: n}
}

func (b *bitset) get(i uint64) bool { return b.words[i>>6]&(1<<(i&63)) != 0 }

// set sets bit i to v and reports whether it changed.
func (b *bitset) set(i uint64, v bool) bool {
	w, m := &b.words[i>>6], uint64(1)<<(i&63)
	if (*w&m != 0) == v {
		return false
	}
	*w ^= m
	if v {
		b.ones++
	} else {
		b.ones--
	}
	return true
}

// fill sets every bit to v.
func (b *bitset) fill(v bool) {
	for i := range b.words {
		b.words[i] = 0
		if v {
			b.words[i] = ^uint64(0)
		}
	}
	b.ones = 0
	if v {
		b.ones = b.n
		if r := b.n & 63; r != 0 {
			b.words[len(b.words)-1] = 1<<r - 1
		}
	}
}

// nextClear returns the first clear bit at or after from, or n.
func (b *bitset) nextClear(from uint64) uint64 {
	for i := from; i < b.n; {
		w := ^b.words[i>>6] >> (i & 63)
		if w != 0 {
			j := i + uint64(bits.TrailingZeros64(w))
			return min(j, b.n)
		}
		i = (i | 63) + 1
	}
	return b.n
}

// nextSet returns the first set bit at or after from, or n.
func (b *bitset) nextSet(from uint64) uint64 {
	for i := from; i < b.n; {
		w := b.words[i>>6] >> (i & 63)
		if w != 0 {
			return min(i+uint64(bits.TrailingZeros64(w)), b.n)
		}
		i = (i | 63) + 1
	}
	return b.n
}

// chunks returns the number of ChunkBits-sized chunks.
func (b *bitset) chunks() uint64 { return (uint64(len(b.words)) + chunkWords - 1) / chunkWords }

// chunk returns the words of chunk c (the last may be short).
func (b *bitset) chunk(c uint64) []uint64 {
	lo := c * chunkWords
	return b.words[lo:min(lo+chunkWords, uint64(len(b.words)))]
}

// load replaces chunk c's words and recounts.
func (b *bitset) load(c uint64, words []uint64) {
	dst := b.chunk(c)
	for i := range dst {
		var w uint64
		if i < len(words) {
			w = words[i]
		}
		if i == len(b.words)-1-int(c*chunkWords) && b.n&63 != 0 {
			w &= 1<<(b.n&63) - 1
		}
		b.ones += uint64(bits.OnesCount64(w)) - uint64(bits.OnesCount64(dst[i]))
		dst[i] = w
	}
}
