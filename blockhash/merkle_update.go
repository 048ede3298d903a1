package blockhash

import "sort"

// Update returns the tree of chunks, the volume's chunk list after a
// rehash, given t, the tree of the list before it, and spans, the byte
// ranges outside which both lists are equal (Diff.Spans of the rehash). It
// regroups only around the spans, level by level, with the same resync idea
// as Rehash: regrouping starts at the parent that holds a span's first
// child and stops once a new group ends where an old one did. The result
// equals NewTree(chunks); t is not modified. The volume size must not have
// changed.
func (t *Tree) Update(chunks []Chunk, spans []Range) *Tree {
	if len(t.levels) == 0 || len(chunks) == 0 {
		return NewTree(chunks)
	}
	level := make([]Node, len(chunks))
	for i, c := range chunks {
		level[i] = Node{Offset: c.Offset, Length: c.Length, Hash: c.ID}
	}
	return t.updateLeaves(level, spans)
}

// updateLeaves is Update given the new level 0, which it keeps.
func (t *Tree) updateLeaves(level []Node, spans []Range) *Tree {
	nt := &Tree{levels: [][]Node{level}}
	dirty := mergeRanges(spans)
	for k := 1; len(level) > 1; k++ {
		if k >= len(t.levels) {
			level = groupLevel(level, k)
		} else {
			level, dirty = regroup(level, t.levels[k], dirty, k)
		}
		nt.levels = append(nt.levels, level)
	}
	return nt
}

// regroup builds level k from children, the new level k-1, reusing the old
// level k (oldParents) outside dirty, the sorted byte ranges outside which
// the old and new level k-1 are equal. It returns the new level and its
// dirty ranges, which have the same property one level up.
func regroup(children, oldParents []Node, dirty []Range, k int) ([]Node, []Range) {
	// Decisions at the last two children depend on where the level ends
	// (a group never closes at the second-to-last child), and that moves
	// when the count changes: redo the old last group and the group of the
	// new second-to-last child.
	last := oldParents[len(oldParents)-1]
	tail := children[len(children)-2]
	dirty = mergeRanges(append(dirty, Range{last.Offset, last.Length}, Range{tail.Offset, last.End() - tail.Offset}))

	out := make([]Node, 0, len(oldParents)+len(dirty))
	var newDirty []Range
	var buf []byte
	pi := 0         // next old parent to copy
	var done uint64 // out is final up to here
	copyOld := func(ps []Node) {
		if len(ps) == 0 {
			return
		}
		delta := childIndex(children, ps[0].Offset) - ps[0].First
		for _, p := range ps {
			p.First += delta
			out = append(out, p)
		}
	}
	for di := 0; di < len(dirty); {
		if dirty[di].End() <= done {
			di++
			continue
		}
		x := max(dirty[di].Off, done)
		j := sort.Search(len(oldParents), func(i int) bool { return oldParents[i].Offset > x }) - 1
		copyOld(oldParents[pi:j])
		start := oldParents[j].Offset
		first := childIndex(children, start)
		var end uint64
		for i := first; ; i++ {
			if !closesGroup(children, first, i) {
				continue
			}
			out = append(out, newParent(children, first, i, k, &buf))
			end = children[i].End()
			first = i + 1
			for di < len(dirty) && dirty[di].End() <= end {
				di++
			}
			if i == len(children)-1 {
				break
			}
			if (di == len(dirty) || dirty[di].Off >= end) && isParentEnd(oldParents, end) {
				break
			}
		}
		newDirty = append(newDirty, Range{start, end - start})
		pi = sort.Search(len(oldParents), func(i int) bool { return oldParents[i].Offset >= end })
		done = end
	}
	copyOld(oldParents[pi:])
	return out, newDirty
}

// childIndex returns the index of the node of level that starts at off,
// which must exist.
func childIndex(level []Node, off uint64) int {
	return sort.Search(len(level), func(i int) bool { return level[i].Offset >= off })
}

// isParentEnd reports whether a node of level ends at off.
func isParentEnd(level []Node, off uint64) bool {
	i := sort.Search(len(level), func(i int) bool { return level[i].End() >= off })
	return i < len(level) && level[i].End() == off
}

// mergeRanges sorts ranges by offset and merges overlapping and adjacent
// ones, dropping empty ones.
func mergeRanges(rs []Range) []Range {
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		if r.Len > 0 {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Off < out[j].Off })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.Off <= merged[n-1].End() {
			merged[n-1].Len = max(merged[n-1].End(), r.End()) - merged[n-1].Off
			continue
		}
		merged = append(merged, r)
	}
	return merged
}
