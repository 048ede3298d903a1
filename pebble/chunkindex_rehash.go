package pebble

import (
	"context"
	"fmt"
	"io"

	"github.com/dmsync/dmsync/blockhash"
)

// Rehash brings volume's stored chunk index up to date after the byte
// ranges changed were written: it loads the index, rehashes only around the
// changes with a chunker of the index's parameters, and applies the diff
// together with the new Merkle root in one synced batch. size is the
// device's current size. On any error the stored index is unchanged.
func (x *ChunkIndex) Rehash(ctx context.Context, volume string, r io.ReaderAt, size uint64, changed []blockhash.Range, opts ...blockhash.Option) (blockhash.Diff, error) {
	info, old, err := x.Load(volume)
	if err != nil {
		return blockhash.Diff{}, err
	}
	c, err := blockhash.NewChunker(info.Params, opts...)
	if err != nil {
		return blockhash.Diff{}, fmt.Errorf("%w: volume %q: stored parameters: %w", ErrCorrupt, volume, err)
	}
	list, d, err := c.Rehash(ctx, volume, r, size, old, changed)
	if err != nil {
		return blockhash.Diff{}, err
	}
	if err := x.Apply(volume, d, blockhash.NewTree(list).Root()); err != nil {
		return blockhash.Diff{}, err
	}
	return d, nil
}
