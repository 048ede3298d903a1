package blockhash

import "github.com/cespare/xxhash/v2"

// BlockSize is the granularity of block fingerprints: 4 KiB, the unit the
// kernel and dm-crypt write in. A changed chunk can be patched by sending
// only its blocks whose fingerprints differ (the receiver then verifies the
// chunk's ID over the patched bytes).
const BlockSize = 4096

// BlockFingerprints returns the XXH64 fingerprints of the 4 KiB blocks of
// data, the bytes of a chunk at volume offset offset. Blocks are aligned to
// the volume, not to the chunk: block k covers volume bytes
// [k*BlockSize, (k+1)*BlockSize) clipped to the chunk, so the first and last
// entries may cover less than BlockSize bytes. Use BlockRange to map an
// entry back to its byte range.
func BlockFingerprints(offset uint64, data []byte) []uint64 {
	if len(data) == 0 {
		return nil
	}
	end := offset + uint64(len(data))
	first := offset / BlockSize
	last := (end - 1) / BlockSize
	fps := make([]uint64, 0, last-first+1)
	for k := first; k <= last; k++ {
		lo := max(k*BlockSize, offset) - offset
		hi := min((k+1)*BlockSize, end) - offset
		fps = append(fps, xxhash.Sum64(data[lo:hi]))
	}
	return fps
}

// BlockRange returns the volume byte range [off, end) covered by entry i of
// BlockFingerprints for the chunk c.
func BlockRange(c Chunk, i int) (off, end uint64) {
	k := c.Offset/BlockSize + uint64(i)
	return max(k*BlockSize, c.Offset), min((k+1)*BlockSize, c.End())
}
