package rpc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// TestCutChanged: for any range and any set of changed blocks, CutChanged
// returns exactly the runs of changed blocks, with the ids and bytes Cut
// gives them and their XXH64 fingerprints, whether the range is read in
// one stripe or several, and whether its buffer is kept or handed back.
func TestCutChanged(t *testing.T) {
	for _, cs := range []uint32{4096, 16 << 10} {
		t.Run(fmt.Sprint(cs), func(t *testing.T) { testCutChanged(t, FixedChunker{Size: cs}) })
	}
}

func testCutChanged(t *testing.T, f FixedChunker) {
	const size = 8<<20 + 1000 // the last block is short
	vol := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{3}).Read(vol)
	r := rand.New(rand.NewPCG(4, 5))
	cases := []struct {
		name       string
		start, end uint64
		frac       float64 // share of blocks changed
	}{
		{"one block, unchanged", 4096, 8192, 0},
		{"one block, changed", 4096, 8192, 1},
		{"unaligned, all changed", 100, 3<<20 + 7, 1},
		{"several stripes, 1% changed", 0, 8 << 20, 0.01},
		{"several stripes, half changed", 0, 8 << 20, 0.5},
		{"to the short end, all changed", 6 << 20, size, 1},
		{"to the short end, 10% changed", 2 << 20, size, 0.1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, _, err := f.Cut(bytes.NewReader(vol), size, tc.start, tc.end)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range want.Chunks {
				if c.ID != Sum(vol[c.Offset:c.End()]) {
					t.Fatalf("Cut: chunk at %d: id is not the BLAKE3 of its bytes", c.Offset)
				}
			}
			chg := map[uint64]bool{}
			for _, c := range want.Chunks {
				chg[c.Offset] = r.Float64() < tc.frac
			}
			rgs, data, fps, read, release, err := f.CutChanged(bytes.NewReader(vol), size, tc.start, tc.end, func(off, fp uint64) bool { return chg[off] })
			if err != nil {
				t.Fatal(err)
			}
			if release != nil {
				defer release()
			}
			if read != want.End-want.Start {
				t.Errorf("read %d bytes, want %d", read, want.End-want.Start)
			}
			var got []Chunk
			for k, rg := range rgs {
				if len(rg.Chunks) == 0 || rg.Start != rg.Chunks[0].Offset || rg.End != rg.Chunks[len(rg.Chunks)-1].End() {
					t.Fatalf("range %d [%d,%d) does not tile its chunks", k, rg.Start, rg.End)
				}
				if !bytes.Equal(data[k], vol[rg.Start:rg.End]) {
					t.Fatalf("range %d [%d,%d): bytes differ from the volume's", k, rg.Start, rg.End)
				}
				for i, c := range rg.Chunks {
					b := vol[c.Offset:c.End()]
					want := xxhash.Sum64(b)
					var wantBlocks []uint64
					if len(b) > 4096 {
						// The XXH64 of the blocks' XXH64s, little-endian.
						var raw []byte
						for o := 0; o < len(b); o += 4096 {
							wantBlocks = append(wantBlocks, xxhash.Sum64(b[o:min(o+4096, len(b))]))
							raw = binary.LittleEndian.AppendUint64(raw, wantBlocks[len(wantBlocks)-1])
						}
						want = xxhash.Sum64(raw)
					}
					if c.ID != Sum(b) {
						t.Fatalf("chunk at %d: id is not the BLAKE3 of its bytes", c.Offset)
					}
					if fps[k][i] != want {
						t.Fatalf("chunk at %d: wrong fingerprint", c.Offset)
					}
					if !slices.Equal(c.Blocks, wantBlocks) {
						t.Fatalf("chunk at %d: block fingerprints %x, want %x", c.Offset, c.Blocks, wantBlocks)
					}
				}
				if k > 0 && rgs[k-1].End >= rg.Start {
					t.Fatalf("ranges %d and %d touch: one run was split", k-1, k)
				}
				got = append(got, rg.Chunks...)
			}
			var wantChunks []Chunk
			for _, c := range want.Chunks {
				if chg[c.Offset] {
					wantChunks = append(wantChunks, c)
				}
			}
			if len(got) != len(wantChunks) {
				t.Fatalf("%d chunks, want %d", len(got), len(wantChunks))
			}
			for i := range got {
				if got[i].Offset != wantChunks[i].Offset || got[i].Length != wantChunks[i].Length || got[i].ID != wantChunks[i].ID {
					t.Fatalf("chunk %d: %+v, want %+v", i, got[i], wantChunks[i])
				}
			}

		})
	}
}

// TestCutChangedShortSource: a source shorter than the volume reads as
// zeros past its end, also into a buffer that held other bytes before.
func TestCutChangedShortSource(t *testing.T) {
	f := FixedChunker{Size: 4096}
	full := bytes.Repeat([]byte{0xee}, 2<<20)
	all := func(uint64, uint64) bool { return true }
	for range 3 { // leave filled buffers behind for reuse
		if _, _, _, _, _, err := f.CutChanged(bytes.NewReader(full), 2<<20, 0, 2<<20, func(off, _ uint64) bool { return off == 0 }); err != nil {
			t.Fatal(err)
		}
	}
	short := bytes.Repeat([]byte{1}, 1<<20+5)
	// A buffer that was handed back after a whole read is reused too.
	_, _, _, _, release, err := f.CutChanged(bytes.NewReader(full), 2<<20, 0, 2<<20, all)
	if err != nil || release == nil {
		t.Fatalf("a wholly changed range: release %v, err %v", release != nil, err)
	}
	release()
	rgs, data, _, _, _, err := f.CutChanged(bytes.NewReader(short), 2<<20, 0, 2<<20, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(rgs) != 1 || len(data[0]) != 2<<20 {
		t.Fatalf("got %d ranges", len(rgs))
	}
	want := append(bytes.Clone(short), make([]byte, 2<<20-len(short))...)
	if !bytes.Equal(data[0], want) {
		t.Fatal("bytes past the source's end are not zeros")
	}
}
