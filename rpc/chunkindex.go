package rpc

import (
	"context"
	"fmt"
	"io"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/pebble"
)

// RehashIndex brings volume's stored chunk index up to date after the byte
// ranges changed were written: it loads the index (pebble stores), rehashes
// only around the changes with a chunker of the index's parameters
// (blockhash computes), and applies the diff together with the new Merkle
// root in one synced batch. size is the device's current size. On any error
// the stored index is unchanged.
func RehashIndex(ctx context.Context, x *pebble.ChunkIndex, volume string, r io.ReaderAt, size uint64, changed []blockhash.Range, opts ...blockhash.Option) (blockhash.Diff, error) {
	info, stored, err := x.Load(volume)
	if err != nil {
		return blockhash.Diff{}, err
	}
	c, err := blockhash.NewChunker(blockhash.Params(info.Params), opts...)
	if err != nil {
		return blockhash.Diff{}, fmt.Errorf("%w: volume %q: stored parameters: %w", pebble.ErrCorrupt, volume, err)
	}
	old := make([]blockhash.Chunk, len(stored))
	for i, s := range stored {
		old[i] = blockhash.Chunk(s)
	}
	list, d, err := c.Rehash(ctx, volume, r, size, old, changed)
	if err != nil {
		return blockhash.Diff{}, err
	}
	if err := x.Apply(volume, indexDiff(d), blockhash.NewTree(list).Root()); err != nil {
		return blockhash.Diff{}, err
	}
	return d, nil
}

func indexDiff(d blockhash.Diff) pebble.IndexDiff {
	out := pebble.IndexDiff{Removed: make([]pebble.IndexChunk, len(d.Removed)), Added: make([]pebble.IndexChunk, len(d.Added))}
	for i, c := range d.Removed {
		out.Removed[i] = pebble.IndexChunk(c)
	}
	for i, c := range d.Added {
		out.Added[i] = pebble.IndexChunk(c)
	}
	return out
}
