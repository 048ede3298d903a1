package opstate

// MapCells is the number of cells of a volume's pending map.
const MapCells = 256

// PendingMap cuts regions regions into min(cells, regions) equal cells and
// returns, for each, the fraction of its regions that are in pending
// (region numbers; out-of-range ones are ignored). It returns nil for an
// empty volume.
func PendingMap(pending []uint64, regions uint64, cells int) []float32 {
	if regions == 0 || cells <= 0 {
		return nil
	}
	n := uint64(cells)
	if regions < n {
		n = regions
	}
	counts := make([]uint64, n)
	for _, r := range pending {
		if r < regions {
			counts[cellOf(r, regions, n)]++
		}
	}
	out := make([]float32, n)
	for c := range counts {
		lo, hi := cellStart(uint64(c), regions, n), cellStart(uint64(c)+1, regions, n)
		out[c] = float32(float64(counts[c]) / float64(hi-lo))
	}
	return out
}

// cellStart is the first region of cell c of n over regions regions.
func cellStart(c, regions, n uint64) uint64 {
	// regions*c may overflow for absurd sizes; regions < 2^40 in practice.
	return regions * c / n
}

// cellOf is the cell of region r: the c with cellStart(c) <= r < cellStart(c+1).
func cellOf(r, regions, n uint64) uint64 {
	c := r * n / regions // cellStart(c) <= r; at most a few cells early
	for c+1 < n && cellStart(c+1, regions, n) <= r {
		c++
	}
	return c
}
