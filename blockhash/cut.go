package blockhash

// gearWindow is the number of bytes the gear hash depends on: after
// h = h<<1 + gear[b] for each byte, bit k of h depends only on the last k+1
// bytes, so all 64 bits depend on the last 64 bytes. The cut rule looks only
// at the hash of the window ending at a position and at the distance from the
// chunk's start, which is what makes the resync pass of Rehash exact.
const gearWindow = 64

// cutter finds chunk boundaries for one set of Params.
type cutter struct {
	min, avg, max int
	// small and large are thresholds: a position ends a chunk when the
	// hash is below the threshold. small applies before avg bytes (harder
	// to hit, 1/(4*avg)), large from avg on (easier, 4/avg): FastCDC's
	// normalized chunking, level 2.
	small, large uint64
}

func newCutter(p Params) cutter {
	avg := uint64(p.Avg)
	return cutter{
		min:   int(p.Min),
		avg:   int(p.Avg),
		max:   int(p.Max),
		small: ^uint64(0) / (avg * 4),
		large: ^uint64(0) / avg * 4,
	}
}

// boundary returns the length of the chunk that starts at data[0]. atEOF
// tells whether the input ends with data. ok is false when the boundary
// cannot be decided without more data.
func (c *cutter) boundary(data []byte, atEOF bool) (n int, ok bool) {
	if len(data) <= c.min {
		if atEOF {
			return len(data), true
		}
		return 0, false
	}
	limit := min(len(data), c.max)
	d := data[:limit]
	var h uint64
	// Warm the window up on the gearWindow bytes before min so that the
	// hash at every candidate position covers a full window.
	for _, b := range d[c.min-gearWindow : c.min] {
		h = h<<1 + gearTable[b]
	}
	normal := min(c.avg, limit)
	i, h := scan(d, c.min, normal, h, c.small)
	if i < 0 {
		i, _ = scan(d, normal, limit, h, c.large)
	}
	if i >= 0 {
		return i + 1, true
	}
	if limit == c.max || atEOF {
		return limit, true
	}
	return 0, false
}

// scan rolls the gear hash h over d[from:to] and returns the first index i
// at which the hash (after adding d[i]) is below threshold, with the hash
// at that point. If there is none it returns -to-1 and the hash after
// d[to-1].
//
// The loop handles four bytes per step. The hash after each of them is
// computed from the hash before the step (h<<k plus a combination of the
// table entries that does not depend on h), so the loop-carried dependency
// is one shift and one add per four bytes instead of per byte. A step in
// which any of the four is below threshold (rare: about once a chunk) is
// done again byte by byte, which finds the first. Four compares and
// branches beat a min over the four: BenchmarkBoundary 1.8 -> 2.7 GB/s.
func scan(d []byte, from, to int, h, threshold uint64) (int, uint64) {
	i := from
	for ; i+4 <= to; i += 4 {
		b := d[i : i+4 : i+4]
		g0, g1, g2, g3 := gearTable[b[0]], gearTable[b[1]], gearTable[b[2]], gearTable[b[3]]
		k1 := g0<<1 + g1
		k2 := k1<<1 + g2
		k3 := k2<<1 + g3
		h0 := h<<1 + g0
		h1 := h<<2 + k1
		h2 := h<<3 + k2
		h3 := h<<4 + k3
		if h0 < threshold || h1 < threshold || h2 < threshold || h3 < threshold {
			break
		}
		h = h3
	}
	for ; i < to; i++ {
		h = h<<1 + gearTable[d[i]]
		if h < threshold {
			return i, h
		}
	}
	return -to - 1, h
}
