// Package blake3batch computes BLAKE3-256 digests of many equal blocks of
// 4 KiB or 16 KiB, the fixed chunk sizes of dmsync.
//
// BLAKE3's SIMD code runs one lane per 1 KiB chunk of a message, and
// github.com/zeebo/blake3 fills eight AVX2 lanes at a time: it hashes a
// 4 KiB block at about half, and a 16 KiB block at about 85%, of the speed
// it reaches on long inputs. On a CPU with AVX-512, Sum hashes sixteen
// chunks in the sixteen 32-bit lanes of the ZMM registers: four 4 KiB
// blocks (block k's chunk c in lane 4k+c), or one 16 KiB block, and then
// builds the parent levels of their trees in the same registers. The
// digests are BLAKE3-256's, bit for bit: the tests compare every path with
// zeebo/blake3.
//
// Without AVX-512 (or built with the purego tag) every block goes through
// zeebo/blake3.
package blake3batch

//go:generate go run ./gen -out sum_amd64.s
