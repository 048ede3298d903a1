package blockhash

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
)

// randomBytes returns n deterministic pseudo-random bytes for seed. The
// golden vectors depend on it: do not change it.
func randomBytes(seed uint64, n int) []byte {
	s := splitmix64(seed)
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], s.next())
	}
	return b[:n]
}

// plaintextBytes returns n deterministic bytes that look like text: words
// from a small vocabulary, so that content repeats but not periodically.
func plaintextBytes(seed uint64, n int) []byte {
	words := []string{"the ", "block ", "device ", "mirror ", "region ", "chunk ", "of ", "a ", "kernel ", "log\n", "write ", "sector ", "and ", "peer ", "dirty ", "clean "}
	s := splitmix64(seed)
	var buf bytes.Buffer
	for buf.Len() < n {
		v := s.next()
		for k := 0; k < 16 && buf.Len() < n; k++ {
			buf.WriteString(words[v&15])
			v >>= 4
		}
	}
	return buf.Bytes()[:n]
}

// testParams are small parameters so that tests see many chunks.
var testParams = Params{Version: FormatVersion, Min: 512, Avg: 2048, Max: 8192}

func mustChunker(t testing.TB, p Params, opts ...Option) *Chunker {
	t.Helper()
	c, err := NewChunker(p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func chunkAll(t testing.TB, c *Chunker, data []byte) []Chunk {
	t.Helper()
	list, _, err := c.All(context.Background(), bytes.NewReader(data), uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// checkTiling verifies that list tiles [0, len(data)) with chunks whose sizes
// respect p, and that every chunk's hashes match its bytes.
func checkTiling(p Params, data []byte, list []Chunk) error {
	var off uint64
	for i, c := range list {
		if c.Offset != off {
			return fmt.Errorf("chunk %d starts at %d, want %d", i, c.Offset, off)
		}
		last := i == len(list)-1
		if c.Length == 0 || c.Length > uint64(p.Max) || (!last && c.Length < uint64(p.Min)) {
			return fmt.Errorf("chunk %d at %d has length %d outside [%d, %d]", i, c.Offset, c.Length, p.Min, p.Max)
		}
		if c.End() > uint64(len(data)) {
			return fmt.Errorf("chunk %d at %d ends at %d past the input (%d)", i, c.Offset, c.End(), len(data))
		}
		if want := NewChunk(c.Offset, data[c.Offset:c.End()]); want != c {
			return fmt.Errorf("chunk %d at %d: hashes do not match its bytes", i, c.Offset)
		}
		off = c.End()
	}
	if off != uint64(len(data)) {
		return fmt.Errorf("chunks cover %d of %d bytes", off, len(data))
	}
	return nil
}
