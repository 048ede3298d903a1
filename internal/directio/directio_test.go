package directio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// testFile makes a file on a file system that supports O_DIRECT where the
// test directory allows it (tmpfs does not; then the buffered fallback is
// tested, which must behave the same).
func testFile(t testing.TB, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), "vol")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func TestReadAtAnyAlignment(t *testing.T) {
	p, data := testFile(t, 5*Align+123)
	f, err := Open(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Logf("direct I/O: %v", f.Direct())
	for _, tc := range []struct{ off, n int }{
		{0, Align}, {1, 10}, {Align - 1, 2}, {100, 3 * Align}, {0, len(data)}, {5 * Align, 123}, {5*Align + 100, 23},
	} {
		buf := make([]byte, tc.n)
		n, err := f.ReadAt(buf, int64(tc.off))
		if err != nil || n != tc.n {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", tc.off, tc.n, n, err)
		}
		if !bytes.Equal(buf, data[tc.off:tc.off+tc.n]) {
			t.Fatalf("ReadAt(%d, %d) returned other bytes", tc.off, tc.n)
		}
	}
	// Past the end: the bytes that exist, then io.EOF.
	buf := make([]byte, 200)
	n, err := f.ReadAt(buf, int64(len(data)-50))
	if n != 50 || !errors.Is(err, io.EOF) || !bytes.Equal(buf[:50], data[len(data)-50:]) {
		t.Fatalf("ReadAt across the end = %d, %v", n, err)
	}
	if n, err := f.ReadAt(buf, int64(len(data)+Align)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt beyond the end = %d, %v", n, err)
	}
	if sz, err := f.Size(); err != nil || sz != int64(len(data)) {
		t.Fatalf("Size = %d, %v", sz, err)
	}
}

func TestWriteAtUnalignedKeepsNeighbours(t *testing.T) {
	p, data := testFile(t, 4*Align)
	f, err := Open(p, true)
	if err != nil {
		t.Fatal(err)
	}
	patch := bytes.Repeat([]byte{0xAB}, Align+10)
	if _, err := f.WriteAt(patch, 3000); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	copy(data[3000:], patch)
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("unaligned write changed bytes outside its range or missed some")
	}
}

func TestBufferAligned(t *testing.T) {
	for _, n := range []int{0, 1, Align, 3*Align + 5} {
		if b := Buffer(n); len(b) != n || !aligned(b[:n/Align*Align], 0) {
			t.Fatalf("Buffer(%d) misaligned or wrong length %d", n, len(b))
		}
	}
}

func FuzzReadAt(f *testing.F) {
	p, data := testFile(f, 3*Align+77)
	f.Add(uint16(0), uint16(10))
	f.Add(uint16(4095), uint16(4097))
	f.Fuzz(func(t *testing.T, off, n uint16) {
		file, err := Open(p, false)
		if err != nil {
			t.Skip(err)
		}
		defer file.Close()
		buf := make([]byte, int(n))
		got, err := file.ReadAt(buf, int64(off))
		want := max(0, min(int(n), len(data)-int(off)))
		if got != want {
			t.Fatalf("ReadAt(%d, %d) = %d bytes, want %d (err %v)", off, n, got, want, err)
		}
		if want < int(n) && !errors.Is(err, io.EOF) {
			t.Fatalf("short read without io.EOF: %v", err)
		}
		if want == int(n) && err != nil {
			t.Fatalf("full read with error %v", err)
		}
		if got > 0 && !bytes.Equal(buf[:got], data[off:int(off)+got]) {
			t.Fatal("wrong bytes")
		}
	})
}
