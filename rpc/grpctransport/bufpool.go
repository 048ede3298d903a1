package grpctransport

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufferPool is the buffer pool of the client's and the server's gRPC
// transports: sync.Pools of power-of-two capacities from 256 bytes to
// 16 MiB. Unlike gRPC's default pool it does not zero a buffer it hands
// out again: gRPC fills every buffer it gets (from the network, or with a
// message it encodes) before it reads it, and the zeroing cost about 6% of
// a full sync's CPU. Buffers of other sizes are allocated and dropped.
type bufferPool struct {
	pools [maxPoolShift - minPoolShift + 1]sync.Pool
}

const minPoolShift, maxPoolShift = 8, 24

var _ mem.BufferPool = (*bufferPool)(nil)

// sharedPool serves every client and server of the process.
var sharedPool = &bufferPool{}

// Get returns a buffer of length n.
func (p *bufferPool) Get(n int) *[]byte {
	shift := max(bits.Len(uint(max(n, 1)-1)), minPoolShift)
	if shift > maxPoolShift {
		b := make([]byte, n)
		return &b
	}
	if bp, ok := p.pools[shift-minPoolShift].Get().(*[]byte); ok {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<shift)
	return &b
}

// Put takes back a buffer from Get.
func (p *bufferPool) Put(bp *[]byte) {
	c := cap(*bp)
	shift := bits.Len(uint(c)) - 1
	if c == 0 || c != 1<<shift || shift < minPoolShift || shift > maxPoolShift {
		return
	}
	p.pools[shift-minPoolShift].Put(bp)
}
