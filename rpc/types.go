package rpc

import (
	"encoding/hex"
	"fmt"
	"time"
)

// ID is a chunk's identity: its BLAKE3-256 digest.
type ID [32]byte

// String returns the id in hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Chunk is one chunk of the source volume.
type Chunk struct {
	Offset uint64
	Length uint32
	ID     ID
	// Blocks optionally holds the XXH64 fingerprints of the chunk's
	// volume-aligned 4 KiB blocks (blockhash.BlockFingerprints).
	Blocks []uint64
}

// End returns the offset just past the chunk.
func (c Chunk) End() uint64 { return c.Offset + uint64(c.Length) }

// Range is a changed byte range [Start, End) and the chunks that tile it.
type Range struct {
	Start, End uint64
	Chunks     []Chunk
}

// ChunkParams names the chunker that cut a volume; peers must agree.
type ChunkParams struct {
	Algorithm     string
	Min, Avg, Max uint32
}

// String names the parameters: "fixed-v1 4096" or "blockhash-cdc-v1
// 16384/65536/262144" (min/avg/max).
func (p ChunkParams) String() string {
	if p.Min == p.Avg && p.Avg == p.Max {
		return fmt.Sprintf("%s %d", p.Algorithm, p.Max)
	}
	return fmt.Sprintf("%s %d/%d/%d", p.Algorithm, p.Min, p.Avg, p.Max)
}

// Offer opens a batch: the new chunk list of the changed ranges.
type Offer struct {
	Volume     string
	VolumeSize uint64
	Params     ChunkParams
	Batch      uint64
	Ranges     []Range
	// Point, if not 0, stages the batch as part of that consistency point
	// (a token the sender picks per point): nothing is written in place
	// until the point is committed.
	Point uint64
}

// NumChunks returns the number of chunks across all ranges.
func (o *Offer) NumChunks() int {
	n := 0
	for _, r := range o.Ranges {
		n += len(r.Chunks)
	}
	return n
}

// Need is the receiver's answer to an Offer.
type Need struct {
	// Missing[i] is true for each chunk (numbered across ranges) the sender
	// must send.
	Missing []bool
	// Blocks, for some missing chunks, says which of the chunk's blocks
	// to send (SendBlocks) instead of the whole chunk.
	Blocks map[int][]bool
	// Copied counts chunks the receiver copied from elsewhere in its image;
	// Present counts chunks it already held at their offset.
	Copied, Present int
}

// Count returns the number of missing chunks.
func (n Need) Count() int {
	c := 0
	for _, m := range n.Missing {
		if m {
			c++
		}
	}
	return c
}

// Ack is the receiver's durable acknowledgement of a batch.
type Ack struct {
	// HasRoot says Root and Chunks are set (the sender asked for them).
	HasRoot bool
	Root    ID
	Chunks  uint64
}

// RootInfo describes a receiver's replica of a volume.
type RootInfo struct {
	// Root is the root of blockhash's Merkle tree over the chunk list; on
	// a receiver, bytes not received are holes (chunks with the zero ID),
	// so only a whole, equal replica has its source's root.
	Root       ID
	Chunks     uint64
	VolumeSize uint64
	// Covered is how many bytes of the volume the chunk list describes:
	// VolumeSize once every byte has been received.
	Covered uint64
	// Applying is true while a batch is half applied: the replica is not
	// clean.
	Applying bool
	// Point is the last consistency point applied (Seq 0: none yet).
	Point RecoveryPoint
}

// RecoveryPoint is a consistency point applied to a replica: its image
// holds exactly the source as it was at TakenAt.
type RecoveryPoint struct {
	Seq       uint64
	TakenAt   time.Time // the sender's clock, when the source was frozen
	AppliedAt time.Time // the receiver's clock
}

// Commit asks the receiver to apply a staged point.
type Commit struct {
	Volume string
	Point  uint64
	// Batches is how many batches the sender had acknowledged for the
	// point; the receiver refuses unless it holds exactly those.
	Batches int
	TakenAt time.Time
}

// Committed is the receiver's answer to a Commit: the point applied and
// the root over the replica's chunk list after it.
type Committed struct {
	Point  RecoveryPoint
	Root   ID
	Chunks uint64
}
