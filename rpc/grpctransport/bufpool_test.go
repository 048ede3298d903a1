package grpctransport

import "testing"

// TestBufferPool: every length gets a buffer of that length, whose
// capacity is the next power of two within the pooled sizes; a buffer put
// back is handed out again for a length of its class.
func TestBufferPool(t *testing.T) {
	p := &bufferPool{}
	for _, tc := range []struct{ n, cap int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {4096, 4096}, {4097, 8192},
		{1 << 24, 1 << 24}, {1<<24 + 1, 1<<24 + 1},
	} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.cap)
		}
		p.Put(b)
	}
	b := p.Get(3000)
	(*b)[0] = 42
	p.Put(b)
	// sync.Pool may drop it; when it does not, the same array comes back.
	if c := p.Get(2100); cap(*c) != 4096 || len(*c) != 2100 {
		t.Errorf("Get(2100) after a put: len %d cap %d", len(*c), cap(*c))
	}
	odd := make([]byte, 100, 300)
	p.Put(&odd) // not a pooled class: dropped, no panic
}
