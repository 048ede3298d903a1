package replicate

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dmsync/dmsync/internal/admin"
)

func TestCheckImage(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "img")
	if err := os.WriteFile(existing, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		size uint64
		kind error
		want image
	}{
		{filepath.Join(dir, "new"), 0, admin.ErrInvalid, image{}},
		{filepath.Join(dir, "new"), 8192, nil, image{path: filepath.Join(dir, "new"), size: 8192, create: true}},
		{existing, 0, nil, image{path: existing, size: 8192}},
		{existing, 4096, nil, image{path: existing, size: 4096}}, // a larger image is fine
		{existing, 1 << 20, admin.ErrInvalid, image{}},
		{"relative.img", 10, admin.ErrInvalid, image{}},
		{"/dev/dmsync-no-such-disk", 1 << 20, admin.ErrInvalid, image{}}, // never a file under /dev
		{filepath.Join(dir, "nodir", "img"), 10, admin.ErrInvalid, image{}},
		{dir, 10, admin.ErrInvalid, image{}},
		{"/dev/null", 10, admin.ErrInvalid, image{}}, // a character device
	} {
		got, err := checkImage(tc.path, tc.size)
		if tc.kind != nil {
			if !errors.Is(err, tc.kind) {
				t.Errorf("%s %d: %v, want %v", tc.path, tc.size, err, tc.kind)
			}
			continue
		}
		got.info = nil
		if err != nil || got != tc.want {
			t.Errorf("%s %d: %+v, %v, want %+v", tc.path, tc.size, got, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("checkImage created a file: %v", err)
	}
	if _, err := os.Stat("/dev/dmsync-no-such-disk"); err == nil {
		t.Fatal("a file appeared under /dev")
	}
}
