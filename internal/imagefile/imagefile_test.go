package imagefile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCreate: an image is created with its space allocated; one larger
// than the filesystem's free space fails with ErrNoSpace and leaves no
// file; an existing file is not touched.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	if err := Create(p, 64<<20); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 64<<20 || st.Blocks*512 < 64<<20 {
		t.Fatalf("image of %d bytes with %d allocated, want 64 MiB allocated", st.Size, st.Blocks*512)
	}
	if err := Create(p, 4096); err == nil {
		t.Fatal("Create over an existing file succeeded")
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("the existing image changed: %v %v", fi, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	err := Create(big, fs.Bavail*uint64(fs.Bsize)+(1<<30))
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("an image larger than the free space: %v, want ErrNoSpace", err)
	}
	t.Log(err)
	if _, err := os.Stat(big); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed image was left behind: %v", err)
	}
}
