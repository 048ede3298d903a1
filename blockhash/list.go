package blockhash

import "sort"

// ChunksIn returns the chunks of list (sorted by offset, tiling the volume)
// that overlap r: the chunks a sender must consider for a changed region.
// The result shares list's backing array.
func ChunksIn(list []Chunk, r Range) []Chunk {
	if r.Len == 0 {
		return nil
	}
	i := sort.Search(len(list), func(i int) bool { return list[i].End() > r.Off })
	j := sort.Search(len(list), func(j int) bool { return list[j].Offset >= r.End() })
	if i >= j {
		return nil
	}
	return list[i:j]
}
