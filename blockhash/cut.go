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
	i := c.min
	normal := min(c.avg, limit)
	for ; i < normal; i++ {
		h = h<<1 + gearTable[d[i]]
		if h < c.small {
			return i + 1, true
		}
	}
	for ; i < limit; i++ {
		h = h<<1 + gearTable[d[i]]
		if h < c.large {
			return i + 1, true
		}
	}
	if limit == c.max || atEOF {
		return limit, true
	}
	return 0, false
}
