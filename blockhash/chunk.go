package blockhash

import (
	"github.com/cespare/xxhash/v2"
	"github.com/zeebo/blake3"
)

// Chunk is one content-defined chunk of a volume.
type Chunk struct {
	// Offset is the chunk's first byte in the volume.
	Offset uint64
	// Length is the chunk's length in bytes.
	Length uint64
	// ID is the BLAKE3-256 hash of the chunk's bytes: its identity, the
	// only hash a peer may trust for stored or transferred data.
	ID [32]byte
	// Fp is the XXH64 hash of the chunk's bytes, a fast fingerprint for
	// in-memory maps and quick "changed at all?" checks where a collision
	// only costs time. Never use it as the chunk's identity.
	Fp uint64
}

// End returns the offset just past the chunk.
func (c Chunk) End() uint64 { return c.Offset + c.Length }

// NewChunk hashes data, the bytes of the chunk at offset, into a Chunk.
func NewChunk(offset uint64, data []byte) Chunk {
	return Chunk{
		Offset: offset,
		Length: uint64(len(data)),
		ID:     blake3.Sum256(data),
		Fp:     xxhash.Sum64(data),
	}
}
