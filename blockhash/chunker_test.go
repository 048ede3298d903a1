package blockhash

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden vectors in testdata/")

// goldenCase is one input of the golden vectors.
type goldenCase struct {
	name   string
	params Params
	data   func() []byte
}

func goldenCases() []goldenCase {
	return []goldenCase{
		{"default-random-4MiB", DefaultParams(), func() []byte { return randomBytes(1, 4<<20) }},
		{"small-random-256KiB", testParams, func() []byte { return randomBytes(2, 256<<10) }},
		{"4k-16k-64k-plaintext-1MiB", Params{FormatVersion, 4 << 10, 16 << 10, 64 << 10}, func() []byte { return plaintextBytes(3, 1<<20) }},
		{"default-zero-1MiB", DefaultParams(), func() []byte { return make([]byte, 1<<20+12345) }},
		{"small-short-input", testParams, func() []byte { return randomBytes(4, 300) }},
	}
}

// formatGolden renders a chunk list as the golden file's lines.
func formatGolden(list []Chunk) string {
	var b strings.Builder
	for _, c := range list {
		fmt.Fprintf(&b, "%d %d %s %016x\n", c.Offset, c.Length, hex.EncodeToString(c.ID[:]), c.Fp)
	}
	return b.String()
}

// TestGolden pins chunk boundaries and hashes: they are a format shared by
// peers and stored in indexes. A failure here means the format changed:
// bump FormatVersion and run with -update.
func TestGolden(t *testing.T) {
	for _, gc := range goldenCases() {
		t.Run(gc.name, func(t *testing.T) {
			data := gc.data()
			c := mustChunker(t, gc.params)
			list := chunkAll(t, c, data)
			if err := checkTiling(gc.params, data, list); err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("# %s size=%d\n", gc.params, len(data)) + formatGolden(list)
			path := filepath.Join("testdata", "golden", gc.name+".txt")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
				for i := range min(len(gl), len(wl)) {
					if gl[i] != wl[i] {
						t.Fatalf("chunking format changed at line %d:\n got %s\nwant %s", i+1, gl[i], wl[i])
					}
				}
				t.Fatalf("chunking format changed: %d lines, want %d", len(gl), len(wl))
			}
		})
	}
}

// TestGoldenGear pins the gear table through its first and last entries.
func TestGoldenGear(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "golden", "gear.txt"))
	if *update {
		var b strings.Builder
		for _, v := range gearTable {
			fmt.Fprintf(&b, "%016x\n", v)
		}
		if err := os.WriteFile(filepath.Join("testdata", "golden", "gear.txt"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan(); i++ {
		if got := fmt.Sprintf("%016x", gearTable[i]); got != sc.Text() {
			t.Fatalf("gear[%d] = %s, want %s", i, got, sc.Text())
		}
	}
}

func TestChunkSizes(t *testing.T) {
	// The mean chunk length should be near Avg on random data, and the
	// length distribution should mostly avoid the Max cut.
	p := DefaultParams()
	data := randomBytes(10, 32<<20)
	list := chunkAll(t, mustChunker(t, p), data)
	mean := float64(len(data)) / float64(len(list))
	if mean < 0.7*float64(p.Avg) || mean > 1.3*float64(p.Avg) {
		t.Errorf("mean chunk length %.0f, want near %d", mean, p.Avg)
	}
	forced := 0
	for _, c := range list[:len(list)-1] {
		if c.Length == uint64(p.Max) {
			forced++
		}
	}
	if forced > len(list)/100 {
		t.Errorf("%d of %d chunks cut at max", forced, len(list))
	}
	t.Logf("%d chunks, mean %.0f bytes, %d cut at max", len(list), mean, forced)
}

func TestReadSizeDoesNotMatter(t *testing.T) {
	data := randomBytes(20, 3<<20+777)
	want := chunkAll(t, mustChunker(t, testParams), data)
	for _, rs := range []int{1, 4096, 12288, 65536, 3 << 20} {
		for _, w := range []int{1, 3} {
			got := chunkAll(t, mustChunker(t, testParams, WithReadSize(rs), WithWorkers(w)), data)
			if !equalChunks(got, want) {
				t.Errorf("read size %d, %d workers: chunk lists differ", rs, w)
			}
		}
	}
}

func equalChunks(a, b []Chunk) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// alignCheckReader fails reads whose offset, length or buffer are not
// aligned, as O_DIRECT would.
type alignCheckReader struct{ r io.ReaderAt }

func (a alignCheckReader) ReadAt(p []byte, off int64) (int, error) {
	if off%Align != 0 || len(p)%Align != 0 || addrOf(p)%Align != 0 {
		return 0, fmt.Errorf("unaligned read: off %d len %d addr %#x", off, len(p), addrOf(p))
	}
	return a.r.ReadAt(p, off)
}

func TestReadsAreAligned(t *testing.T) {
	data := randomBytes(21, 1<<20+100)
	c := mustChunker(t, testParams, WithReadSize(20000))
	list, n, err := c.All(context.Background(), alignCheckReader{bytes.NewReader(data)}, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if n != uint64(len(data)) {
		t.Errorf("read %d bytes of a %d byte volume", n, len(data))
	}
	if err := checkTiling(testParams, data, list); err != nil {
		t.Fatal(err)
	}
}

func TestShortVolume(t *testing.T) {
	data := randomBytes(22, 100000)
	c := mustChunker(t, testParams)
	_, _, err := c.All(context.Background(), bytes.NewReader(data), uint64(len(data))+5000)
	if !errors.Is(err, ErrShortRead) || !strings.Contains(err.Error(), "offset ") {
		t.Fatalf("err = %v, want ErrShortRead naming the offset", err)
	}
}

func TestEmptyVolume(t *testing.T) {
	list := chunkAll(t, mustChunker(t, testParams), nil)
	if len(list) != 0 {
		t.Fatalf("empty volume has %d chunks", len(list))
	}
}

func TestParamsValidate(t *testing.T) {
	if err := DefaultParams().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := Params{Version: 9, Min: 10, Avg: 5, Max: 1 << 30}
	err := bad.Validate()
	if !errors.Is(err, ErrParams) {
		t.Fatalf("err = %v, want ErrParams", err)
	}
	for _, want := range []string{"version 9", "min 10", "avg 5", "max 1073741824"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := NewChunker(bad); !errors.Is(err, ErrParams) {
		t.Errorf("NewChunker accepted %s", bad)
	}
}

func TestBlockFingerprints(t *testing.T) {
	data := randomBytes(23, 20000)
	c := NewChunk(5000, data)
	fps := BlockFingerprints(c.Offset, data)
	// 5000..25000 touches blocks 1..6.
	if len(fps) != 6 {
		t.Fatalf("%d fingerprints, want 6", len(fps))
	}
	var covered uint64
	for i := range fps {
		off, end := BlockRange(c, i)
		if off/BlockSize != (end-1)/BlockSize {
			t.Errorf("block %d range [%d,%d) crosses a block boundary", i, off, end)
		}
		covered += end - off
	}
	if covered != c.Length {
		t.Errorf("blocks cover %d bytes, want %d", covered, c.Length)
	}
	// Changing one byte changes exactly one fingerprint.
	data2 := bytes.Clone(data)
	data2[9000] ^= 1 // volume offset 14000: block 3, entry 2
	fps2 := BlockFingerprints(c.Offset, data2)
	for i := range fps {
		if (fps[i] != fps2[i]) != (i == 2) {
			t.Errorf("entry %d changed=%v", i, fps[i] != fps2[i])
		}
	}
}

func FuzzChunker(f *testing.F) {
	f.Add([]byte("hello"), uint16(0), uint8(0))
	f.Add(randomBytes(30, 40000), uint16(4096), uint8(1))
	f.Add(make([]byte, 20000), uint16(1), uint8(2))
	f.Fuzz(func(t *testing.T, seed []byte, readSize uint16, pick uint8) {
		// Grow the fuzzer's bytes into a volume with repetitive and random
		// parts, so that both content cuts and max cuts happen.
		data := bytes.Repeat(seed, 1+int(pick%8))
		if len(data) > 1<<20 {
			data = data[:1<<20]
		}
		p := []Params{testParams, {FormatVersion, 64, 128, 1024}, {FormatVersion, 1000, 3000, 5000}}[int(pick)%3]
		want := chunkAll(t, mustChunker(t, p, WithReadSize(1<<20), WithWorkers(1)), data)
		if err := checkTiling(p, data, want); err != nil {
			t.Fatal(err)
		}
		got := chunkAll(t, mustChunker(t, p, WithReadSize(int(readSize)), WithWorkers(1+int(pick%3))), data)
		if !equalChunks(got, want) {
			t.Fatalf("read size %d changes the chunk list", readSize)
		}
		// Boundary on the whole input in memory agrees with the stream.
		c := mustChunker(t, p)
		var off int
		for i := 0; off < len(data); i++ {
			n, ok := c.Boundary(data[off:], true)
			if !ok || want[i].Length != uint64(n) {
				t.Fatalf("chunk %d: Boundary = %d %v, stream %d", i, n, ok, want[i].Length)
			}
			off += n
		}
	})
}
