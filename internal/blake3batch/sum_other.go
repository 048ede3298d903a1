//go:build !amd64 || purego

package blake3batch

const useAVX512 = false

func sum16Chunks(blocks *[4]*byte, counters *[16]uint32, levels int, out *[8][16]uint32) {
	panic("unreachable")
}
