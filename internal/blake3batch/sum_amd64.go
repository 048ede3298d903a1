//go:build amd64 && !purego

package blake3batch

import "golang.org/x/sys/cpu"

var useAVX512 = cpu.X86.HasAVX512F

// sum16Chunks hashes sixteen 1 KiB chunks, chunk c of quarter k at
// blocks[k]+1024c in lane 4k+c, each lane with its chunk counter, then
// builds levels parent levels over adjacent lanes, the last one the root:
// digest word w of message m is left in out[w][m].
//
//go:noescape
func sum16Chunks(blocks *[4]*byte, counters *[16]uint32, levels int, out *[8][16]uint32)
