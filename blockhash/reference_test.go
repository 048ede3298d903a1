package blockhash

import (
	"testing"
)

// referenceBoundary is the cut rule of format version 1 written byte by
// byte, the way the README states it: the oracle for the unrolled scan.
func referenceBoundary(c *cutter, data []byte, atEOF bool) (int, bool) {
	if len(data) <= c.min {
		if atEOF {
			return len(data), true
		}
		return 0, false
	}
	limit := min(len(data), c.max)
	var h uint64
	for i := c.min - gearWindow; i < limit; i++ {
		h = h<<1 + gearTable[data[i]]
		if i < c.min {
			continue
		}
		threshold := c.large
		if i < c.avg {
			threshold = c.small
		}
		if h < threshold {
			return i + 1, true
		}
	}
	if limit == c.max || atEOF {
		return limit, true
	}
	return 0, false
}

func TestBoundaryMatchesReference(t *testing.T) {
	for _, p := range []Params{testParams, DefaultParams(), {FormatVersion, 64, 65, 66}, {FormatVersion, 100, 203, 409}} {
		c := newCutter(p)
		data := append(randomBytes(70, 256<<10), make([]byte, 3*int(p.Max))...)
		data = append(data, plaintextBytes(71, 256<<10)...)
		for off := 0; off < len(data); {
			for _, atEOF := range []bool{true, false} {
				for _, l := range []int{len(data) - off, int(p.Min) + 3, int(p.Avg) + 1, int(p.Max) - 1} {
					l = min(l, len(data)-off)
					n, ok := c.boundary(data[off:off+l], atEOF)
					rn, rok := referenceBoundary(&c, data[off:off+l], atEOF)
					if n != rn || ok != rok {
						t.Fatalf("%s at %d len %d eof %v: boundary %d %v, reference %d %v", p, off, l, atEOF, n, ok, rn, rok)
					}
				}
			}
			n, _ := c.boundary(data[off:], true)
			off += n
		}
	}
}

func FuzzBoundaryMatchesReference(f *testing.F) {
	f.Add([]byte("abc"), uint16(64), uint16(100), uint16(300), true)
	f.Fuzz(func(t *testing.T, data []byte, mn, av, mx uint16, atEOF bool) {
		p := Params{FormatVersion, uint32(mn), uint32(av), uint32(mx)}
		if p.Validate() != nil {
			return
		}
		c := newCutter(p)
		n, ok := c.boundary(data, atEOF)
		rn, rok := referenceBoundary(&c, data, atEOF)
		if n != rn || ok != rok {
			t.Fatalf("boundary %d %v, reference %d %v", n, ok, rn, rok)
		}
	})
}

func BenchmarkBoundaryReference(b *testing.B) {
	data := randomBytes(40, 64<<20)
	c := newCutter(DefaultParams())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for off := 0; off < len(data); {
			n, _ := referenceBoundary(&c, data[off:], true)
			off += n
		}
	}
}
