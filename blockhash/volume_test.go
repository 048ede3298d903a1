package blockhash

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestVolumeCut(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 19))
	c := mustChunker(t, testParams)
	data := randomBytes(19, 1<<20)
	v, err := ScanVolume(t.Context(), "vol", c, bytes.NewReader(data), uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	const region = 64 << 10
	for range 50 {
		changes := mutate(rng, data, changeKinds[rng.IntN(len(changeKinds))])
		for _, ch := range changes {
			// Cut every region the change touched, as a sender would.
			for r := ch.Off / region; r*region < ch.End(); r++ {
				start, end := r*region, min((r+1)*region, uint64(len(data)))
				span, chunks, got, _, err := v.Cut(t.Context(), bytes.NewReader(data), start, end)
				if err != nil {
					t.Fatal(err)
				}
				if span.Off > start || span.End() < end || !bytes.Equal(got, data[span.Off:span.End()]) {
					t.Fatalf("Cut [%d,%d): span %v and its bytes do not cover the region", start, end, span)
				}
				if err := checkTiling(testParams, data[span.Off:span.End()], rebase(chunks, span.Off)); err != nil {
					t.Fatalf("Cut [%d,%d): %v", start, end, err)
				}
			}
		}
		want := chunkAll(t, c, data)
		if !equalChunks(v.Chunks(), want) || v.Tree().Root() != NewTree(want).Root() {
			t.Fatal("volume index differs from a full re-chunk")
		}
	}
	if _, _, _, _, err := v.Cut(t.Context(), bytes.NewReader(data), 5, 5); !errors.Is(err, ErrRangeOutside) {
		t.Fatalf("empty cut: %v", err)
	}
	if _, err := NewVolume("vol", c, uint64(len(data))+1, v.Chunks()); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("NewVolume with a wrong size: %v", err)
	}
}

// rebase shifts chunks so that offset base becomes 0 (for checkTiling on a
// slice of the volume); IDs stay valid since they cover the same bytes.
func rebase(chunks []Chunk, base uint64) []Chunk {
	out := make([]Chunk, len(chunks))
	for i, c := range chunks {
		c.Offset -= base
		out[i] = c
	}
	return out
}
