package blockhash

import (
	"bytes"
	"context"
	"testing"
)

func BenchmarkBoundary(b *testing.B) {
	data := randomBytes(40, 64<<20)
	c := mustChunker(b, DefaultParams())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for off := 0; off < len(data); {
			n, _ := c.Boundary(data[off:], true)
			off += n
		}
	}
}

func BenchmarkChunksHashed(b *testing.B) {
	data := randomBytes(41, 64<<20)
	c := mustChunker(b, DefaultParams())
	r := bytes.NewReader(data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := c.Chunks(context.Background(), r, uint64(len(data)), func(Chunk, []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
