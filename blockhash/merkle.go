package blockhash

import (
	"encoding/binary"
	"slices"
	"sort"

	"github.com/zeebo/blake3"
)

// Shape of the content-defined Merkle tree.
const (
	// TreeFanout is the average number of children of an inner node.
	TreeFanout = 16
	// treeMaxFanout forces a group boundary, bounding a node's size.
	treeMaxFanout = 4 * TreeFanout
)

// Node is one node of a volume's Merkle tree. Level 0 holds one node per
// chunk (Hash = the chunk's ID); a node of level k > 0 covers a run of
// consecutive level k-1 nodes. Nodes of a level tile the volume in order.
type Node struct {
	// Offset and Length are the volume byte range the node covers.
	Offset, Length uint64
	// Hash is the chunk ID for a leaf, else BLAKE3-256 over 0x01, the
	// level, and each child's length (u64 big-endian) and hash.
	Hash [32]byte
	// First and Count select the node's children in the level below
	// (Count is 0 for leaves).
	First, Count int
}

// End returns the offset just past the node.
func (n Node) End() uint64 { return n.Offset + n.Length }

// Tree is a content-defined Merkle tree over a chunk list: a child ends a
// group (and its parent node) when its hash, read as a number, is divisible
// by TreeFanout, so group boundaries depend only on the children's own
// contents and an inserted, removed or changed chunk disturbs only the nodes
// on its path and at most one neighbouring group per level. Groups have at
// least 2 and at most 4·TreeFanout+1 children; the tree ends at a level with
// one node, the root.
//
// Two nodes find where their volumes differ by descending both trees level
// by level (Diff), exchanging only the hashes of nodes under differing ones.
type Tree struct {
	levels [][]Node
}

// NewTree builds the Merkle tree of chunks, which must tile the volume (as
// a Chunker or Rehash returns them). Building costs one BLAKE3 call per
// inner node over ~40 bytes per child: rebuild after each rehash.
func NewTree(chunks []Chunk) *Tree {
	t := &Tree{}
	if len(chunks) == 0 {
		return t
	}
	level := make([]Node, len(chunks))
	for i, c := range chunks {
		level[i] = Node{Offset: c.Offset, Length: c.Length, Hash: c.ID}
	}
	t.levels = append(t.levels, level)
	for len(level) > 1 {
		level = groupLevel(level, len(t.levels))
		t.levels = append(t.levels, level)
	}
	return t
}

// groupLevel builds level k from the nodes of level k-1.
func groupLevel(children []Node, k int) []Node {
	parents := make([]Node, 0, len(children)/TreeFanout+1)
	var buf []byte
	first := 0
	for i := range children {
		if closesGroup(children, first, i) {
			parents = append(parents, newParent(children, first, i, k, &buf))
			first = i + 1
		}
	}
	return parents
}

// closesGroup reports whether children[i] ends the group that starts at
// children[first].
func closesGroup(children []Node, first, i int) bool {
	n := i - first + 1
	switch {
	case i == len(children)-1:
		return true
	case i+1 == len(children)-1:
		return false // never leave a lone child at the end
	case n >= treeMaxFanout:
		return true
	default:
		return n >= 2 && binary.LittleEndian.Uint64(children[i].Hash[:8])%TreeFanout == 0
	}
}

// newParent returns the level k node over children[first..last].
func newParent(children []Node, first, last, k int, buf *[]byte) Node {
	b := append((*buf)[:0], 0x01, byte(k))
	for _, c := range children[first : last+1] {
		b = binary.BigEndian.AppendUint64(b, c.Length)
		b = append(b, c.Hash[:]...)
	}
	*buf = b
	return Node{
		Offset: children[first].Offset,
		Length: children[last].End() - children[first].Offset,
		Hash:   blake3.Sum256(b),
		First:  first,
		Count:  last - first + 1,
	}
}

// Root returns the tree's root hash; the zero hash for an empty volume.
func (t *Tree) Root() [32]byte {
	if len(t.levels) == 0 {
		return [32]byte{}
	}
	return t.levels[len(t.levels)-1][0].Hash
}

// Height returns the number of levels (0 for an empty volume).
func (t *Tree) Height() int { return len(t.levels) }

// Level returns the nodes of level k (0 = chunks), in volume order. The
// slice must not be modified.
func (t *Tree) Level(k int) []Node { return t.levels[k] }

// Nodes returns the nodes of level k that overlap any of ranges (sorted by
// offset, not overlapping), in volume order, each once.
func (t *Tree) Nodes(k int, ranges []Range) []Node {
	if k < 0 || k >= len(t.levels) {
		return nil
	}
	level := t.levels[k]
	var out []Node
	next := 0 // first node not yet returned
	for _, r := range ranges {
		i := sort.Search(len(level), func(i int) bool { return level[i].End() > r.Off })
		for i = max(i, next); i < len(level) && level[i].Offset < r.End(); i++ {
			out = append(out, level[i])
			next = i + 1
		}
	}
	return out
}

// NodeSource serves the nodes of a remote volume's tree, one round trip per
// call. rpc implements it over the wire; a local *Tree serves its own.
type NodeSource interface {
	// TreeHeight returns the remote tree's Height.
	TreeHeight() (int, error)
	// TreeNodes returns the remote tree's nodes of level k that overlap
	// any of ranges, as Tree.Nodes does.
	TreeNodes(k int, ranges []Range) ([]Node, error)
}

// TreeHeight implements NodeSource.
func (t *Tree) TreeHeight() (int, error) { return t.Height(), nil }

// TreeNodes implements NodeSource.
func (t *Tree) TreeNodes(k int, ranges []Range) ([]Node, error) { return t.Nodes(k, ranges), nil }

// DiffStats counts the work of a Diff.
type DiffStats struct {
	// RoundTrips is the number of TreeNodes calls.
	RoundTrips int
	// RemoteHashes is the number of remote node hashes received.
	RemoteHashes int
}

// Diff returns the byte ranges where the local tree's volume and the remote
// one differ: the merged ranges of the chunks present on one side and not
// (same offset, length and ID) on the other. It descends from the highest
// level both trees have, fetching at each level only the remote nodes that
// overlap a range found different one level up: O(changes · fanout ·
// height) hashes instead of one per chunk.
func (t *Tree) Diff(remote NodeSource) ([]Range, DiffStats, error) {
	var st DiffStats
	rh, err := remote.TreeHeight()
	if err != nil {
		return nil, st, err
	}
	top := min(t.Height(), rh) - 1
	var suspect []Range
	switch {
	case t.Height() == 0 && rh == 0:
		return nil, st, nil
	case top < 0: // one side is empty: the other's whole volume differs
		var size uint64
		if t.Height() > 0 {
			l := t.levels[0]
			size = l[len(l)-1].End()
		} else {
			r, err := remote.TreeNodes(rh-1, []Range{{0, ^uint64(0)}})
			st.RoundTrips++
			if err != nil {
				return nil, st, err
			}
			for _, n := range r {
				size = max(size, n.End())
			}
		}
		return []Range{{0, size}}, st, nil
	}
	suspect = []Range{{0, ^uint64(0)}}
	for k := top; k >= 0 && len(suspect) > 0; k-- {
		theirs, err := remote.TreeNodes(k, suspect)
		st.RoundTrips++
		st.RemoteHashes += len(theirs)
		if err != nil {
			return nil, st, err
		}
		ours := t.Nodes(k, suspect)
		suspect = unmatched(ours, theirs)
	}
	return suspect, st, nil
}

// unmatched returns the merged byte ranges of the nodes in a or b that have
// no equal node (same offset, length, hash) in the other; both are sorted by
// offset.
func unmatched(a, b []Node) []Range {
	type key struct {
		off, len uint64
		hash     [32]byte
	}
	inB := make(map[key]bool, len(b))
	for _, n := range b {
		inB[key{n.Offset, n.Length, n.Hash}] = true
	}
	inA := make(map[key]bool, len(a))
	var rs []Range
	for _, n := range a {
		inA[key{n.Offset, n.Length, n.Hash}] = true
		if !inB[key{n.Offset, n.Length, n.Hash}] {
			rs = append(rs, Range{n.Offset, n.Length})
		}
	}
	for _, n := range b {
		if !inA[key{n.Offset, n.Length, n.Hash}] {
			rs = append(rs, Range{n.Offset, n.Length})
		}
	}
	slices.SortFunc(rs, func(x, y Range) int {
		switch {
		case x.Off < y.Off:
			return -1
		case x.Off > y.Off:
			return 1
		}
		return 0
	})
	merged := rs[:0]
	for _, r := range rs {
		if n := len(merged); n > 0 && r.Off <= merged[n-1].End() {
			merged[n-1].Len = max(merged[n-1].End(), r.End()) - merged[n-1].Off
			continue
		}
		merged = append(merged, r)
	}
	return merged
}
