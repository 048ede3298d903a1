package blockhash

import (
	"fmt"
	"sort"
)

// Splice returns the tree of t's chunk list with the chunks inside each
// window replaced by fresh: what a store that changed only inside windows
// now holds. t's chunk list must tile its volume; windows must be sorted,
// disjoint, and start and end at chunk boundaries of t's list; fresh must
// be sorted and tile the windows exactly (a window may not be left empty).
// Only the windows are regrouped (Update), so the cost is one pass over
// the chunk list without hashing plus the hashing around the windows.
// t is not modified. An error means the arguments break these rules; t is
// then still the caller's tree.
func (t *Tree) Splice(windows []Range, fresh []Chunk) (*Tree, error) {
	if t.Height() == 0 {
		return nil, fmt.Errorf("splice into an empty tree")
	}
	old := t.levels[0]
	list := make([]Node, 0, len(old)+len(fresh))
	i, f := 0, 0 // next old node, next fresh chunk
	var prevEnd uint64
	for wi, w := range windows {
		if w.Len == 0 {
			return nil, fmt.Errorf("splice: empty window at byte %d", w.Off)
		}
		if wi > 0 && w.Off < prevEnd {
			return nil, fmt.Errorf("splice: window [%d, %d) starts before the last window ends (%d)", w.Off, w.End(), prevEnd)
		}
		prevEnd = w.End()
		j := sort.Search(len(old), func(k int) bool { return old[k].Offset >= w.Off })
		if j < i || j == len(old) || old[j].Offset != w.Off {
			return nil, fmt.Errorf("splice: window [%d, %d) does not start at a chunk boundary", w.Off, w.End())
		}
		list = append(list, old[i:j]...)
		i = j
		for i < len(old) && old[i].End() <= w.End() {
			i++
		}
		if old[i-1].End() != w.End() {
			return nil, fmt.Errorf("splice: window [%d, %d) does not end at a chunk boundary", w.Off, w.End())
		}
		at := w.Off
		for ; f < len(fresh) && fresh[f].Offset < w.End(); f++ {
			c := fresh[f]
			if c.Offset != at || c.Length == 0 || c.End() > w.End() {
				return nil, fmt.Errorf("splice: chunk [%d, %d) does not tile window [%d, %d) at byte %d", c.Offset, c.End(), w.Off, w.End(), at)
			}
			list = append(list, Node{Offset: c.Offset, Length: c.Length, Hash: c.ID})
			at = c.End()
		}
		if at != w.End() {
			return nil, fmt.Errorf("splice: window [%d, %d) covered only up to byte %d", w.Off, w.End(), at)
		}
	}
	if f != len(fresh) {
		return nil, fmt.Errorf("splice: chunk at byte %d lies outside every window", fresh[f].Offset)
	}
	list = append(list, old[i:]...)
	return t.updateLeaves(list, windows), nil
}

// Chunks returns the tree's chunk list (its level 0) as chunks, in volume
// order. It allocates a new slice.
func (t *Tree) Chunks() []Chunk {
	if t.Height() == 0 {
		return nil
	}
	out := make([]Chunk, len(t.levels[0]))
	for i, n := range t.levels[0] {
		out[i] = Chunk{Offset: n.Offset, Length: n.Length, ID: n.Hash}
	}
	return out
}
