package blake3batch

import (
	"encoding/binary"
	"fmt"

	"github.com/zeebo/blake3"
)

// The block sizes Sum has a kernel for; any other size is hashed one block
// at a time by zeebo/blake3.
const (
	Size4K  = 4 << 10
	Size16K = 16 << 10
)

// Sum sets ids[i] to the BLAKE3-256 digest of data[offs[i]:offs[i]+size]
// for every i. It panics if len(ids) != len(offs) or a block does not lie
// inside data, as slicing would.
func Sum[ID ~[32]byte](data []byte, size int, offs []int, ids []ID) {
	if len(ids) != len(offs) {
		panic(fmt.Sprintf("blake3batch: %d offsets, %d ids", len(offs), len(ids)))
	}
	i := 0
	if useAVX512 {
		var quarters [4]*byte
		var out [8][16]uint32
		switch size {
		case Size4K:
			for ; i+4 <= len(offs); i += 4 {
				for k := range quarters {
					o := offs[i+k]
					quarters[k] = &data[o : o+size][0]
				}
				sum16Chunks(&quarters, &counters4, 2, &out)
				for k := range quarters {
					put(&ids[i+k], &out, k)
				}
			}
		case Size16K:
			for ; i < len(offs); i++ {
				b := data[offs[i] : offs[i]+size]
				for k := range quarters {
					quarters[k] = &b[k*Size4K]
				}
				sum16Chunks(&quarters, &counters16, 4, &out)
				put(&ids[i], &out, 0)
			}
		}
	}
	for ; i < len(offs); i++ {
		ids[i] = ID(blake3.Sum256(data[offs[i] : offs[i]+size]))
	}
}

// The chunk counters of the lanes: four 4 KiB messages (lane 4k+c is
// chunk c of message k), or one 16 KiB message (lane l is chunk l).
var (
	counters4  = [16]uint32{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}
	counters16 = [16]uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
)

// put stores the digest in lane k of out.
func put[ID ~[32]byte](id *ID, out *[8][16]uint32, k int) {
	var b [32]byte
	for w := range 8 {
		binary.LittleEndian.PutUint32(b[4*w:], out[w][k])
	}
	*id = ID(b)
}
