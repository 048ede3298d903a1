package rpc

import (
	"github.com/zeebo/blake3"

	"github.com/dmsync/dmsync/internal/blake3batch"
)

// Sum returns the ID (BLAKE3-256) of data.
//
// It uses github.com/zeebo/blake3, whose AVX2/SSE4.1 code hashes 4 KiB
// chunks about three times as fast on the build machine as
// lukechampine.com/blake3 did, with identical digests
// (TestSumMatchesReference checks every length against that module).
// Chunks of the fixed sizes go through a sumBatch instead.
func Sum(data []byte) ID { return ID(blake3.Sum256(data)) }

// batchSizes are the chunk lengths blake3batch hashes several lanes at a
// time; sumBatch hashes other lengths one by one.
var batchSizes = [...]int{blake3batch.Size4K, blake3batch.Size16K}

// sumBatch collects chunks of one buffer to hash in bulk: for each of
// batchSizes, the chunks' offsets in the buffer and the caller's index of
// each.
type sumBatch struct {
	offs [len(batchSizes)][]int
	idx  [len(batchSizes)][]int
}

// add records the chunk of length n at data[pos:], the caller's chunk i. It
// returns false, recording nothing, if n is not one of batchSizes.
func (s *sumBatch) add(pos, n, i int) bool {
	for k, size := range batchSizes {
		if n == size {
			s.offs[k] = append(s.offs[k], pos)
			s.idx[k] = append(s.idx[k], i)
			return true
		}
	}
	return false
}

// sum hashes the recorded chunks of data and calls f with each one's index
// and ID, in the order they were added per size.
func (s *sumBatch) sum(data []byte, f func(i int, id ID)) {
	for k, size := range batchSizes {
		if len(s.offs[k]) == 0 {
			continue
		}
		ids := make([]ID, len(s.offs[k]))
		blake3batch.Sum(data, size, s.offs[k], ids)
		for n, id := range ids {
			f(s.idx[k][n], id)
		}
	}
}
