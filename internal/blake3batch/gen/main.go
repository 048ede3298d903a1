// Command gen writes sum_amd64.s, the AVX-512 kernel of package
// blake3batch: sixteen BLAKE3 chunks of 1 KiB at once, one per 32-bit lane
// of a ZMM register (four 4 KiB messages of four chunks, or one 16 KiB
// message of sixteen), then the parent levels of the messages' trees in
// the same registers.
//
// Run it through go generate in the parent directory; `make verify-gen`
// fails if the committed file differs from what it writes.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"sort"
)

// Register plan for one compression of 16 lanes: the state v0..v15 is
// Z0..Z15 and the message words m0..m15 are Z16..Z31. Between compressions
// only the chaining value (Z0..Z7) is live; Z8 serves as the gather index
// and permute index while the message is loaded.
func v(i int) string { return fmt.Sprintf("Z%d", i) }
func m(i int) string { return fmt.Sprintf("Z%d", 16+i) }

// msgPermutation is BLAKE3's message word permutation between rounds.
var msgPermutation = [16]int{2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8}

var iv = [8]uint32{0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19}

// The flags of the BLAKE3 compression function.
const (
	chunkStart = 1
	chunkEnd   = 2
	parent     = 4
	root       = 8
)

type gen struct{ b bytes.Buffer }

func (g *gen) p(format string, a ...any) { fmt.Fprintf(&g.b, format+"\n", a...) }

// rounds emits the seven rounds on Z0..Z31. The four G functions of a half
// round are interleaved step by step, as they are independent.
func (g *gen) rounds(msg [16]string) {
	sched := [16]int{}
	for i := range sched {
		sched[i] = i
	}
	for r := 0; r < 7; r++ {
		g.p("\t// round %d", r+1)
		g.half([4][4]int{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}, msg, sched, 0)
		g.half([4][4]int{{0, 5, 10, 15}, {1, 6, 11, 12}, {2, 7, 8, 13}, {3, 4, 9, 14}}, msg, sched, 8)
		var next [16]int
		for i := range next {
			next[i] = sched[msgPermutation[i]]
		}
		sched = next
	}
}

func (g *gen) half(quads [4][4]int, msg [16]string, sched [16]int, first int) {
	for k, step := range []struct {
		word int
		rot1 int
		rot2 int
	}{{0, 16, 12}, {1, 8, 7}} {
		_ = k
		for i, q := range quads {
			g.p("\tVPADDD %s, %s, %s", v(q[1]), v(q[0]), v(q[0]))
			g.p("\tVPADDD %s, %s, %s", msg[sched[first+2*i+step.word]], v(q[0]), v(q[0]))
		}
		for _, q := range quads {
			g.p("\tVPXORD %s, %s, %s", v(q[0]), v(q[3]), v(q[3]))
			g.p("\tVPRORD $%d, %s, %s", step.rot1, v(q[3]), v(q[3]))
		}
		for _, q := range quads {
			g.p("\tVPADDD %s, %s, %s", v(q[3]), v(q[2]), v(q[2]))
		}
		for _, q := range quads {
			g.p("\tVPXORD %s, %s, %s", v(q[2]), v(q[1]), v(q[1]))
			g.p("\tVPRORD $%d, %s, %s", step.rot2, v(q[1]), v(q[1]))
		}
	}
}

// tail sets v8..v15 for a compression with counter words from memory (or
// zero), block length 64 and the flags in AX.
func (g *gen) tail(counter string) {
	for i := 0; i < 4; i++ {
		g.p("\tMOVL $0x%08X, BX", iv[i])
		g.p("\tVPBROADCASTD BX, %s", v(8+i))
	}
	if counter == "" {
		g.p("\tVPXORD Z12, Z12, Z12")
	} else {
		g.p("\tVMOVDQU32 %s, Z12", counter)
	}
	g.p("\tVPXORD Z13, Z13, Z13")
	g.p("\tMOVL $64, BX")
	g.p("\tVPBROADCASTD BX, Z14")
	g.p("\tVPBROADCASTD AX, Z15")
}

// feedForward turns the state into the new chaining value in Z0..Z7.
func (g *gen) feedForward() {
	for i := 0; i < 8; i++ {
		g.p("\tVPXORD %s, %s, %s", v(8+i), v(i), v(i))
	}
}

// parentMessage loads the message of a parent level into the registers
// msg names, with the flags in AX: lane p's message is the chaining values
// of lanes 2p and 2p+1. The state is then set up for the compression.
func (g *gen) parentMessage(msg [16]string) {
	g.p("\tVMOVDQU32 ·evenLanes(SB), Z8")
	g.p("\tVMOVDQU32 ·oddLanes(SB), Z9")
	for j := 0; j < 8; j++ {
		g.p("\tVPERMD %s, Z8, %s", v(j), msg[j])
		g.p("\tVPERMD %s, Z9, %s", v(j), msg[8+j])
	}
	for i := 0; i < 8; i++ {
		g.p("\tMOVL $0x%08X, BX", iv[i])
		g.p("\tVPBROADCASTD BX, %s", v(i))
	}
	g.tail("")
}

// regs hands out Z8..Z31 while a block's message is loaded and
// transposed (Z0..Z7 hold the chaining value then).
type regs struct{ free []int }

func newRegs() *regs {
	r := &regs{}
	for z := 8; z < 32; z++ {
		r.free = append(r.free, z)
	}
	return r
}

// take returns a free register, the lowest-numbered one.
func (r *regs) take() string {
	z := r.free[0]
	r.free = r.free[1:]
	return fmt.Sprintf("Z%d", z)
}

// takeHigh returns the lowest free register of Z16..Z31, if there is one.
func (r *regs) takeHigh() string {
	for i, z := range r.free {
		if z >= 16 {
			r.free = append(r.free[:i:i], r.free[i+1:]...)
			return fmt.Sprintf("Z%d", z)
		}
	}
	return r.take()
}

func (r *regs) put(names ...string) {
	for _, n := range names {
		var z int
		fmt.Sscanf(n, "Z%d", &z)
		r.free = append(r.free, z)
	}
	sort.Ints(r.free)
}

// loadMessage loads block R12/64 of the sixteen chunks (lane 4k+c: chunk c
// of the message at R8+k) and transposes the 16x16 words, so that message
// word j of every lane is in one register. It returns where word j is,
// always one of Z16..Z31.
func (g *gen) loadMessage() (msg [16]string) {
	r := newRegs()
	var rows [16]string
	ptr := [4]string{"R8", "R9", "R10", "R11"}
	for l := range rows {
		rows[l] = r.take()
		g.p("\tVMOVDQU32 %d(%s)(R12*1), %s", 1024*(l%4), ptr[l/4], rows[l])
	}
	// Interleave 32-bit words, then 64-bit pairs, within 128-bit lanes:
	// b[4g+q] then holds, in 128-bit lane k, word 4k+q of rows 4g..4g+3.
	var a [16]string
	for x := 0; x < 16; x += 2 {
		a[x], a[x+1] = r.take(), r.take()
		g.p("\tVPUNPCKLDQ %s, %s, %s", rows[x+1], rows[x], a[x])
		g.p("\tVPUNPCKHDQ %s, %s, %s", rows[x+1], rows[x], a[x+1])
		r.put(rows[x], rows[x+1])
	}
	var b [16]string
	for x := 0; x < 16; x += 4 {
		b[x], b[x+1], b[x+2], b[x+3] = r.take(), r.take(), r.take(), r.take()
		g.p("\tVPUNPCKLQDQ %s, %s, %s", a[x+2], a[x], b[x])
		g.p("\tVPUNPCKHQDQ %s, %s, %s", a[x+2], a[x], b[x+1])
		g.p("\tVPUNPCKLQDQ %s, %s, %s", a[x+3], a[x+1], b[x+2])
		g.p("\tVPUNPCKHQDQ %s, %s, %s", a[x+3], a[x+1], b[x+3])
		r.put(a[x], a[x+1], a[x+2], a[x+3])
	}
	// For each q, transpose the 4x4 matrix of 128-bit lanes of b[q],
	// b[4+q], b[8+q], b[12+q]: word 4k+q of row 4g+i ends in lane 4g+i.
	for q := 0; q < 4; q++ {
		b0, b1, b2, b3 := b[q], b[4+q], b[8+q], b[12+q]
		c0, c1, c2, c3 := r.take(), r.take(), r.take(), r.take()
		g.p("\tVSHUFI32X4 $0x44, %s, %s, %s", b1, b0, c0)
		g.p("\tVSHUFI32X4 $0xEE, %s, %s, %s", b1, b0, c1)
		g.p("\tVSHUFI32X4 $0x44, %s, %s, %s", b3, b2, c2)
		g.p("\tVSHUFI32X4 $0xEE, %s, %s, %s", b3, b2, c3)
		r.put(b0, b1, b2, b3)
		for k, pair := range [4][2]string{{c0, c2}, {c0, c2}, {c1, c3}, {c1, c3}} {
			imm := 0x88
			if k%2 == 1 {
				imm = 0xDD
			}
			msg[4*k+q] = r.takeHigh()
			g.p("\tVSHUFI32X4 $0x%02X, %s, %s, %s", imm, pair[1], pair[0], msg[4*k+q])
			if k%2 == 1 {
				r.put(pair[0], pair[1])
			}
		}
	}
	// v8..v15 are Z8..Z15: move any message word out of them.
	for j, z := range msg {
		var n int
		fmt.Sscanf(z, "Z%d", &n)
		if n >= 16 {
			continue
		}
		for {
			to := r.take()
			var t int
			fmt.Sscanf(to, "Z%d", &t)
			if t >= 16 {
				g.p("\tVMOVDQA32 %s, %s", z, to)
				msg[j] = to
				break
			}
			defer r.put(to)
		}
	}
	return msg
}

// kernel emits func sum16Chunks(blocks *[4]*byte, counters *[16]uint32,
// levels int, out *[8][16]uint32): the sixteen 1 KiB chunks at
// blocks[k]+1024c (lane 4k+c) with the chunk counters of the lanes, then
// levels parent levels, the last of them the root. Digest word w of
// message k is left in out[w][k].
func (g *gen) kernel() {
	g.p("")
	g.p("// func sum16Chunks(blocks *[4]*byte, counters *[16]uint32, levels int, out *[8][16]uint32)")
	g.p("TEXT ·sum16Chunks(SB), NOSPLIT, $0-32")
	g.p("\tMOVQ blocks+0(FP), AX")
	g.p("\tMOVQ 0(AX), R8")
	g.p("\tMOVQ 8(AX), R9")
	g.p("\tMOVQ 16(AX), R10")
	g.p("\tMOVQ 24(AX), R11")
	g.p("\tMOVQ counters+8(FP), SI")
	g.p("\tMOVQ levels+16(FP), DX")
	g.p("\tMOVQ out+24(FP), DI")
	for i := 0; i < 8; i++ {
		g.p("\tMOVL $0x%08X, BX", iv[i])
		g.p("\tVPBROADCASTD BX, %s", v(i))
	}
	g.p("\tXORQ R12, R12")
	g.p("\tXORQ CX, CX")
	g.p("block:")
	// The flags of the block at byte R12 of a chunk.
	g.p("\tXORL AX, AX")
	g.p("\tMOVL $%d, BX", chunkStart)
	g.p("\tTESTQ R12, R12")
	g.p("\tCMOVLEQ BX, AX")
	g.p("\tMOVL $%d, BX", chunkEnd)
	g.p("\tCMPQ R12, $960")
	g.p("\tCMOVLEQ BX, AX")
	msg := g.loadMessage()
	g.tail("(SI)")
	g.p("\tJMP compress")
	// After the chunks, one compression per parent level, CX counting
	// them: the message words go to the registers the chunks' transpose
	// left them in, so both share one copy of the rounds.
	g.p("parent:")
	g.p("\tINCQ CX")
	g.p("\tMOVL $%d, AX", parent)
	g.p("\tMOVL $%d, BX", parent|root)
	g.p("\tCMPQ CX, DX")
	g.p("\tCMOVLEQ BX, AX")
	g.parentMessage(msg)
	g.p("compress:")
	g.rounds(msg)
	g.feedForward()
	g.p("\tADDQ $64, R12")
	g.p("\tCMPQ R12, $1024")
	g.p("\tJLT block")
	g.p("\tCMPQ CX, DX")
	g.p("\tJLT parent")
	for i := 0; i < 8; i++ {
		g.p("\tVMOVDQU32 %s, %d(DI)", v(i), 64*i)
	}
	g.p("\tVZEROUPPER")
	g.p("\tRET")
}

func main() {
	out := flag.String("out", "sum_amd64.s", "file to write")
	flag.Parse()
	g := &gen{}
	g.p("// Code generated by gen/main.go; DO NOT EDIT.")
	g.p("")
	g.p("//go:build amd64 && !purego")
	g.p("")
	g.p("#include \"textflag.h\"")
	g.p("")
	for i := 0; i < 16; i++ {
		g.p("DATA ·evenLanes+%d(SB)/4, $%d", 4*i, (2*i)%16)
	}
	g.p("GLOBL ·evenLanes(SB), RODATA|NOPTR, $64")
	for i := 0; i < 16; i++ {
		g.p("DATA ·oddLanes+%d(SB)/4, $%d", 4*i, (2*i+1)%16)
	}
	g.p("GLOBL ·oddLanes(SB), RODATA|NOPTR, $64")
	g.p("")
	g.kernel()
	if err := os.WriteFile(*out, g.b.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
