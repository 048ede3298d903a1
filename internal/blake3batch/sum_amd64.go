//go:build amd64 && !purego

package blake3batch

import "golang.org/x/sys/cpu"

var useAVX512 = cpu.X86.HasAVX512F

// sum4x4K hashes the four 4 KiB blocks at blocks[0..3], leaving digest
// word w of block k in out[w][k].
//
//go:noescape
func sum4x4K(blocks *[4]*byte, out *[8][16]uint32)

// sum16K hashes the 16 KiB block whose four 4 KiB quarters are at
// blocks[0..3], leaving digest word w in out[w][0].
//
//go:noescape
func sum16K(blocks *[4]*byte, out *[8][16]uint32)
