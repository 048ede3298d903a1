package blockhash_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/zeebo/blake3"

	"github.com/dmsync/dmsync/blockhash"
)

var volumeMiB = flag.Int("volume-mib", 1024, "volume size for the -ratios cost figures")

// countingReader counts the bytes and calls of ReadAt.
type countingReader struct {
	r            *bytes.Reader
	bytes, calls atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes.Add(int64(n))
	c.calls.Add(1)
	return n, err
}

// writeBlocks overwrites 4 KiB blocks of data with random bytes: count
// writes of run consecutive blocks at random block offsets. It returns the
// changed ranges.
func writeBlocks(rng *rand.Rand, data []byte, count, run int) []blockhash.Range {
	blocks := len(data) / blockhash.BlockSize
	var rs []blockhash.Range
	for range count {
		b := rng.IntN(blocks - run + 1)
		off := b * blockhash.BlockSize
		n := run * blockhash.BlockSize
		for i := off; i < off+n; i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				data[i+j] = byte(v >> (8 * j))
			}
		}
		rs = append(rs, blockhash.Range{Off: uint64(off), Len: uint64(n)})
	}
	return rs
}

var paramSets = []blockhash.Params{
	{Version: blockhash.FormatVersion, Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10},
	{Version: blockhash.FormatVersion, Min: 8 << 10, Avg: 32 << 10, Max: 128 << 10},
	blockhash.DefaultParams(),
}

// TestRehashCost: rehash after 1% of a volume's 4 KiB blocks changed
// (uniformly scattered, and clustered in 64 KiB runs) against a full
// re-chunk of the changed volume: bytes read, read calls and time.
func TestRehashCost(t *testing.T) {
	if !*ratios {
		t.Skip("cost figures: run with -ratios -v [-volume-mib N]")
	}
	size := *volumeMiB << 20
	base := compareData(size)
	ctx := context.Background()
	var out strings.Builder
	fmt.Fprintf(&out, "rehash after 1%% of the 4 KiB blocks of a %d MiB random volume changed, vs a full re-chunk:\n", *volumeMiB)
	fmt.Fprintf(&out, "  %-22s %-10s %12s %9s %10s %12s %9s %8s %8s %12s\n", "params", "writes", "rehash read", "calls", "time", "full read", "time", "read", "time", "chunks +/-")
	for _, p := range paramSets {
		c, err := blockhash.NewChunker(p)
		if err != nil {
			t.Fatal(err)
		}
		old, _, err := c.All(ctx, bytes.NewReader(base), uint64(size))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []struct {
			name       string
			count, run int
		}{{"scattered", size / blockhash.BlockSize / 100, 1}, {"64K-runs", size / blockhash.BlockSize / 100 / 16, 16}} {
			data := slices.Clone(base)
			rng := rand.New(rand.NewPCG(uint64(p.Avg), uint64(w.run)))
			changes := writeBlocks(rng, data, w.count, w.run)

			cr := &countingReader{r: bytes.NewReader(data)}
			start := time.Now()
			list, d, err := c.Rehash(ctx, "bench", cr, uint64(size), old, changes)
			rehashTime := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			fr := &countingReader{r: bytes.NewReader(data)}
			start = time.Now()
			full, _, err := c.All(ctx, fr, uint64(size))
			fullTime := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(list, full) {
				t.Fatalf("%s %s: rehash differs from the full re-chunk", p, w.name)
			}
			fmt.Fprintf(&out, "  %-22s %-10s %9.1f MB %9d %10s %9.1f MB %9s %7.1f%% %7.1f%% %6d/%-5d\n",
				p, w.name, float64(cr.bytes.Load())/1e6, cr.calls.Load(), rehashTime.Round(time.Millisecond),
				float64(fr.bytes.Load())/1e6, fullTime.Round(time.Millisecond),
				100*float64(cr.bytes.Load())/float64(fr.bytes.Load()), 100*rehashTime.Seconds()/fullTime.Seconds(),
				len(d.Removed), len(d.Added))
		}
		old = nil
	}
	t.Log("\n" + out.String())
}

// sent returns the bytes a sender would send for the chunks of list the
// receiver does not have (by ID), each distinct ID once.
func sent(have map[[32]byte]bool, list []blockhash.Chunk) uint64 {
	var n uint64
	seen := map[[32]byte]bool{}
	for _, c := range list {
		if !have[c.ID] && !seen[c.ID] {
			n += c.Length
			seen[c.ID] = true
		}
	}
	return n
}

func idSet(list []blockhash.Chunk) map[[32]byte]bool {
	m := make(map[[32]byte]bool, len(list))
	for _, c := range list {
		m[c.ID] = true
	}
	return m
}

// fixedChunks cuts data into fixed-size blocks, hashed like chunks.
func fixedChunks(data []byte, size int) []blockhash.Chunk {
	var list []blockhash.Chunk
	for off := 0; off < len(data); off += size {
		end := min(off+size, len(data))
		list = append(list, blockhash.Chunk{Offset: uint64(off), Length: uint64(end - off), ID: blake3.Sum256(data[off:end])})
	}
	return list
}

// blockDelta returns the bytes sent when only the 4 KiB blocks of changed
// chunks whose fingerprints differ from the receiver's (same volume range)
// are sent: CDC to find changed chunks, block fingerprints inside them.
func blockDelta(before, after []byte, oldIDs map[[32]byte]bool, list []blockhash.Chunk) uint64 {
	var n uint64
	for _, c := range list {
		if oldIDs[c.ID] {
			continue
		}
		fps := blockhash.BlockFingerprints(c.Offset, after[c.Offset:c.End()])
		for i, fp := range fps {
			off, end := blockhash.BlockRange(c, i)
			if end > uint64(len(before)) || xxhash.Sum64(before[off:end]) != fp {
				n += end - off
			}
		}
	}
	return n
}

// textData returns n bytes of plaintext-like data: words from a vocabulary
// of 2000 pseudo-words, separated by spaces and newlines.
func textData(rng *rand.Rand, n int) []byte {
	vocab := make([]string, 2000)
	for i := range vocab {
		w := make([]byte, 2+rng.IntN(9))
		for j := range w {
			w[j] = 'a' + byte(rng.IntN(26))
		}
		vocab[i] = string(w)
	}
	var b bytes.Buffer
	b.Grow(n + 16)
	for b.Len() < n {
		b.WriteString(vocab[int(rng.ExpFloat64()*200)%len(vocab)])
		if rng.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// TestSendCost compares content-defined chunks with fixed-size blocks of the
// same average size: bytes a sender would send after (a) 1% scattered
// in-place 4 KiB writes into random data (what dm-crypt ciphertext looks
// like) and (b) 100 small byte insertions into plaintext-like data (the
// boundary-shift case).
func TestSendCost(t *testing.T) {
	if !*ratios {
		t.Skip("cost figures: run with -ratios -v [-volume-mib N]")
	}
	size := min(*volumeMiB, 256) << 20
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 3))

	type workload struct {
		name          string
		before, after []byte
		changed       uint64 // bytes actually written or inserted
	}
	var ws []workload
	{
		before := compareData(size)
		after := slices.Clone(before)
		rs := writeBlocks(rng, after, size/blockhash.BlockSize/100, 1)
		ws = append(ws, workload{"(a) 1% scattered 4 KiB writes, random data", before, after, uint64(len(rs) * blockhash.BlockSize)})
	}
	{
		before := textData(rng, size)
		after := slices.Clone(before)
		var inserted uint64
		for range 100 {
			at := rng.IntN(len(after))
			ins := textData(rng, 1+rng.IntN(100))
			after = slices.Insert(after, at, ins...)
			inserted += uint64(len(ins))
		}
		ws = append(ws, workload{"(b) 100 insertions of 1..100 bytes, plaintext", before, after, inserted})
	}
	var out strings.Builder
	fmt.Fprintf(&out, "bytes sent (chunks the receiver lacks, by ID) on a %d MiB volume:\n", size>>20)
	for _, w := range ws {
		fmt.Fprintf(&out, "  %s — %d bytes changed:\n", w.name, w.changed)
		for _, p := range paramSets {
			c, err := blockhash.NewChunker(p)
			if err != nil {
				t.Fatal(err)
			}
			old, _, err := c.All(ctx, bytes.NewReader(w.before), uint64(len(w.before)))
			if err != nil {
				t.Fatal(err)
			}
			nw, _, err := c.All(ctx, bytes.NewReader(w.after), uint64(len(w.after)))
			if err != nil {
				t.Fatal(err)
			}
			oldIDs := idSet(old)
			cdc := sent(oldIDs, nw)
			fixedOld, fixedNew := fixedChunks(w.before, int(p.Avg)), fixedChunks(w.after, int(p.Avg))
			fixed := sent(idSet(fixedOld), fixedNew)
			line := fmt.Sprintf("    avg %3d KiB: CDC %8.1f MB, fixed %8.1f MB (CDC/fixed %.2f)", p.Avg>>10, float64(cdc)/1e6, float64(fixed)/1e6, float64(cdc)/float64(fixed))
			if len(w.before) == len(w.after) {
				bd := blockDelta(w.before, w.after, oldIDs, nw)
				line += fmt.Sprintf("; CDC + 4 KiB block fingerprints %6.1f MB (%.2fx the bytes written)", float64(bd)/1e6, float64(bd)/float64(w.changed))
			}
			fmt.Fprintln(&out, line)
		}
	}
	t.Log("\n" + out.String())
}
