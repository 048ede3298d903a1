package rpc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteBehindFile: writes through writeBehind to a real file (where
// each write also starts its writeback) land where they were asked to, and
// the file syncs; an Image that is not a file is written the same way.
func TestWriteBehindFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	mem := &memImage{b: make([]byte, 1<<20)}
	for _, img := range []Image{f, mem} {
		var w writeBehind
		want := make([]byte, 1<<20)
		for i := range 64 {
			off := uint64(i) * 16 << 10
			data := bytes.Repeat([]byte{byte(i + 1)}, 16<<10)
			copy(want[off:], data)
			if err := w.write(img, data, off, func(err error) error { return err }); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.wait(); err != nil {
			t.Fatal(err)
		}
		if err := img.Sync(); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 1<<20)
		if _, err := img.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%T: the image does not hold what was written", img)
		}
	}
	if err := startWriteback(f, 0, 4096); err != nil {
		t.Fatalf("start writeback of a file: %v", err)
	}
}

// TestWriteBehindWriteFails: a failed write is reported, wrapped, by the
// next write and by wait.
func TestWriteBehindWriteFails(t *testing.T) {
	f, err := os.Open(filepath.Join(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w writeBehind
	boom := errors.New("wrapped")
	wrap := func(err error) error { return errors.Join(boom, err) }
	if err := w.write(f, make([]byte, 4096), 0, wrap); err != nil {
		t.Fatal(err)
	}
	if err := w.wait(); !errors.Is(err, boom) {
		t.Fatalf("wait after a write to a directory: %v, want the wrapped write error", err)
	}
	if err := w.write(f, make([]byte, 4096), 0, wrap); !errors.Is(err, boom) {
		t.Fatalf("write after a failed write: %v, want the first error", err)
	}
}
