package dmtarget

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestHolders(t *testing.T) {
	root := t.TempDir()
	block := filepath.Join(root, "class", "block")
	mk := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(block, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if filepath.Base(p) != "x" {
			if err := os.WriteFile(filepath.Join(block, p), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// dm-0 (a mirror) held by dm-1 (crypt) and md0; dm-1 has no holders.
	mk("dm-0/holders/x", "")
	for _, h := range []string{"dm-1", "md0"} { // sysfs links them
		if err := os.Symlink("../../"+h, filepath.Join(block, "dm-0", "holders", h)); err != nil {
			t.Fatal(err)
		}
	}
	mk("dm-1/dm/name", "vol\n")
	mk("dm-1/dm/uuid", "CRYPT-LUKS2-abc-vol\n")
	mk("md0/size", "1")
	mk("dm-1/size", "1")
	hs, err := Holders(root, "dm-0")
	if err != nil {
		t.Fatal(err)
	}
	want := []Holder{{KName: "dm-1", Name: "vol", UUID: "CRYPT-LUKS2-abc-vol"}, {KName: "md0"}}
	if !slices.Equal(hs, want) {
		t.Fatalf("holders %+v, want %+v", hs, want)
	}
	if hs, err := Holders(root, "dm-1"); err != nil || len(hs) != 0 {
		t.Fatalf("no holders directory: %v %v", hs, err)
	}
	if _, err := Holders(root, "dm-9"); err == nil {
		t.Fatal("a device that does not exist: no error")
	}
	if KernelName(7) != "dm-7" {
		t.Fatal(KernelName(7))
	}
}
