package pebble

import (
	"errors"
	"fmt"
)

// The chunk index stores what package blockhash computes, in its own types:
// pebble stores, it does not chunk or hash (see TestStorageImportsNoCompute).
// The fields match blockhash.Chunk, blockhash.Params and blockhash.Range, so
// a caller converts with a plain type conversion.

// IndexChunk is one stored chunk of a volume's chunk list.
type IndexChunk struct {
	// Offset is the chunk's first byte in the volume.
	Offset uint64
	// Length is the chunk's length in bytes.
	Length uint64
	// ID is the chunk's BLAKE3-256 identity.
	ID [32]byte
	// Fp is the chunk's XXH64 fingerprint.
	Fp uint64
}

// End returns the offset just past the chunk.
func (c IndexChunk) End() uint64 { return c.Offset + c.Length }

// IndexParams are the chunking parameters an index was built with.
type IndexParams struct {
	Version, Min, Avg, Max uint32
}

// MaxIndexChunk is the longest chunk the index accepts.
const MaxIndexChunk = 16 << 20

// ErrBadParams: chunking parameters that no chunker could have used.
var ErrBadParams = errors.New("invalid chunking parameters")

func (p IndexParams) validate() error {
	if p.Version == 0 || p.Min == 0 || p.Min > p.Avg || p.Avg > p.Max || p.Max > MaxIndexChunk {
		return fmt.Errorf("%w: %+v", ErrBadParams, p)
	}
	return nil
}

// IndexDiff is a change to a volume's chunk list: the stored chunks that
// leave it and the chunks that enter it, by offset.
type IndexDiff struct {
	Removed, Added []IndexChunk
}

// IndexRange is the byte range [Off, Off+Len) of a volume.
type IndexRange struct {
	Off, Len uint64
}

// End returns the offset just past the range.
func (r IndexRange) End() uint64 { return r.Off + r.Len }
