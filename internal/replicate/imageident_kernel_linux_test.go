//go:build linux

package replicate

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/internal/guesttest"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/pebble"
)

// TestKernelImageIdentBlock reads real block devices' identities from a
// real kernel's sysfs and binds a replica to one: a dm device is known by
// its uuid (or, without one, its name) whatever minor it gets, a virtio
// disk by its serial or its number; a dm device re-made with another uuid
// is another image, and its replica's index is dropped.
func TestKernelImageIdentBlock(t *testing.T) {
	g := guesttest.Require(t)
	disk := g.Disk(3)
	sectors, err := os.ReadFile("/sys/block/" + filepath.Base(disk) + "/size")
	if err != nil {
		t.Fatal(err)
	}
	half := 0
	if _, err := fmt.Sscan(string(sectors), &half); err != nil || half == 0 {
		t.Fatalf("size of %s: %q %v", disk, sectors, err)
	}
	half /= 2
	made := map[string]bool{} // devices that exist now
	t.Cleanup(func() {
		for name := range made {
			if out, err := exec.Command("dmsetup", "remove", "--force", name).CombinedOutput(); err != nil {
				t.Logf("remove %s: %v: %s", name, err, out)
			}
		}
	})
	mk := func(name, uuid string, start int) string {
		args := []string{"create", name, "--table", fmt.Sprintf("0 %d linear %s %d", half, disk, start)}
		if uuid != "" {
			args = append(args, "--uuid", uuid)
		}
		g.Run("dmsetup", args...)
		made[name] = true
		return "/dev/mapper/" + name
	}
	rm := func(name string) {
		g.Run("dmsetup", "remove", name)
		delete(made, name)
	}
	ident := func(path string) pebble.ImageIdent {
		t.Helper()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		id, err := imageIdentOf(f, "N")
		if err != nil {
			t.Fatal(err)
		}
		return id
	}

	a := ident(mk("ident-a", "DMSYNC-IDENT-A", 0))
	if a.Kind != kindBlock || a.Tag != "dm-uuid:DMSYNC-IDENT-A" || a.Size != uint64(half)*512 || a.Dev == 0 {
		t.Fatalf("dm device with a uuid: %+v", a)
	}
	b := ident(mk("ident-b", "", half))
	if b.Tag != "dm-name:ident-b" {
		t.Fatalf("dm device without a uuid: %+v", b)
	}
	whole := ident(disk)
	t.Logf("virtio disk %s: %+v", disk, whole)
	if whole.Tag != "" && !strings.HasPrefix(whole.Tag, "serial:") {
		t.Errorf("virtio disk tag %q, want none or a serial", whole.Tag)
	}
	rm("ident-b")

	// Bind a replica to ident-a, as the receiver does when it opens it.
	dir := t.TempDir()
	self, err := identity.Init(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(filepath.Join(dir, "pebble"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := pebble.NewReplicaStore(db.Raw())
	m := &Manager{opts: Options{Store: st, Self: self}, log: slog.Default()}
	r := Receive{Volume: "vol", From: self.ID, Image: "/dev/mapper/ident-a", Size: uint64(half) * 512}
	bind := func() {
		t.Helper()
		f, err := m.openImage(r)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	bind()
	meta := pebble.ReplicaMeta{Size: r.Size, Algorithm: "fixed-v1", Min: 4096, Avg: 4096, Max: 4096}
	if err := st.SetMeta("vol", meta); err != nil {
		t.Fatal(err)
	}
	// The same device under another minor (ident-c takes ident-a's old
	// one) is the same image: the replica stays.
	rm("ident-a")
	mk("ident-c", "", half)
	mk("ident-a", "DMSYNC-IDENT-A", 0)
	t.Logf("ident-a was %s, re-made it is %s", devName(a.Dev), devName(ident("/dev/mapper/ident-a").Dev))
	bind()
	if ok, err := st.HasReplica("vol"); err != nil || !ok {
		t.Fatalf("the same device re-made under its uuid lost its replica: %v %v", ok, err)
	}
	if ps := m.Problems(); len(ps) != 0 {
		t.Fatalf("problems after re-binding the same device: %q", ps)
	}
	// Re-made with another uuid, it is another image.
	rm("ident-a")
	mk("ident-a", "DMSYNC-IDENT-OTHER", 0)
	bind()
	if ok, err := st.HasReplica("vol"); err != nil || ok {
		t.Fatalf("another device at the same name kept the replica: %v %v", ok, err)
	}
	if ps := m.Problems(); len(ps) != 1 || !strings.Contains(ps[0], "DMSYNC-IDENT-OTHER") {
		t.Fatalf("problems after the device changed: %q", ps)
	}
	got, ok, err := st.ImageIdent("vol")
	if err != nil || !ok || got.Tag != "dm-uuid:DMSYNC-IDENT-OTHER" || got.Node != self.ID {
		t.Fatalf("the new device is not bound: %+v %v %v", got, ok, err)
	}
}
