//go:build !amd64 || purego

package blake3batch

const useAVX512 = false

func sum4x4K(blocks *[4]*byte, out *[8][16]uint32) { panic("unreachable") }

func sum16K(blocks *[4]*byte, out *[8][16]uint32) { panic("unreachable") }
