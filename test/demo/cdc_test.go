package demo

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// TestKernelCDCInsert replicates two plaintext volumes from A to B, one
// with `replicate --chunking cdc` and one with `--chunking fixed`, each an
// ext4 holding the same large file. Then the same bytes are inserted near
// the start of both files, rewriting the rest in place, so every block on
// disk after the insertion shifts. Fixed 4 KiB chunks change everywhere
// after it and are sent again; the content-defined chunks are the same,
// shifted, and B copies them from its own replica. CDC must send far fewer
// bytes for the same change, and both replicas must equal their volumes.
func TestKernelCDCInsert(t *testing.T) {
	g := guesttest.Require(t)
	const (
		size     = 64 << 20
		fileSize = 24 << 20
		at       = 1 << 20 // where the bytes go in
		inserted = 1000
	)
	linearDevices(t, g, size, []string{"ci-data", "fi-data", "ci-replica", "fi-replica"}, []int{0, 1, 2, 3})
	a := newNode(t, g, "cia", "")
	a.start(t)
	makeNetns(t, g, "nodecib", "10.101.0.1", "10.101.0.2")
	b := newNode(t, g, "cib", "nodecib", "--no-connector", "--listen", "10.101.0.2:7420")
	b.start(t)
	a.cli("peer", "add", b.id, "--addr", "10.101.0.2:7420")

	content := make([]byte, fileSize)
	rand.Read(content)
	insert := make([]byte, inserted)
	rand.Read(insert)
	vols := []struct{ name, chunking string }{{"ci", "cdc"}, {"fi", "fixed"}}
	for _, v := range vols {
		a.cli("volume", "create", v.name, "--data", "/dev/mapper/"+v.name+"-data", "--region-size", "1M")
		t.Cleanup(func() {
			for _, d := range []string{v.name, v.name + "-sink", v.name + "-sinkerr"} {
				g.Try("dmsetup", "remove", "--force", d)
			}
		})
		mnt := "/mnt/" + v.name
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		g.Run("mkfs.ext4", "-q", "/dev/mapper/"+v.name)
		g.Run("mount", "/dev/mapper/"+v.name, mnt)
		t.Cleanup(func() { g.Try("umount", mnt) })
		writeSynced(t, filepath.Join(mnt, "big"), content, 0)
		b.cli("receive", v.name, "--from", a.id, "--image", "/dev/mapper/"+v.name+"-replica", "--size", strconv.Itoa(size))
		a.cli("replicate", v.name, "--to", b.id, "--chunking", v.chunking, "--wait", "--timeout", "10m")
	}
	before := map[string]int64{}
	for _, v := range vols {
		before[v.name] = sendField(t, a, v.name, "sent")
	}

	// The same insertion in both files: the tail is rewritten in place.
	changed := append(append(bytes.Clone(content[:at]), insert...), content[at:]...)
	for _, v := range vols {
		writeSynced(t, filepath.Join("/mnt", v.name, "big"), changed[at:], at)
	}
	sent := map[string]int64{}
	for _, v := range vols {
		a.cli("wait", v.name, "--timeout", "10m")
		sent[v.name] = sendField(t, a, v.name, "sent") - before[v.name]
	}
	tail := int64(len(changed) - at)
	t.Logf("after inserting %d bytes at %d of a %d-byte file (%d bytes rewritten): cdc sent %d bytes (%.3f of them), fixed sent %d (%.3f)",
		inserted, at, fileSize, tail, sent["ci"], float64(sent["ci"])/float64(tail), sent["fi"], float64(sent["fi"])/float64(tail))
	if sent["fi"] < tail*9/10 {
		t.Errorf("fixed chunking sent %d bytes for %d shifted ones: the test's change did not shift the blocks", sent["fi"], tail)
	}
	if sent["ci"]*10 > sent["fi"] {
		t.Errorf("cdc sent %d bytes, fixed %d: cdc should send under a tenth", sent["ci"], sent["fi"])
	}
	g.Run("sync")
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		src, err := os.ReadFile("/dev/mapper/" + v.name)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.ReadFile("/dev/mapper/" + v.name + "-replica")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(src, dst) {
			t.Errorf("%s (%s chunking): B's replica differs from the volume", v.name, v.chunking)
		}
	}
}

// writeSynced writes data at off of the file at path (creating it) and
// fsyncs it.
func writeSynced(t *testing.T, path string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// sendField returns a numeric field of the volume's send line in
// `dmsync status --raw`.
func sendField(t *testing.T, n *node, volume, key string) int64 {
	t.Helper()
	out, _ := n.g.Try(n.g.Bin("dmsync"), "--socket", n.socket, "status", "--raw")
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, volume+" ") && strings.Contains(l, "role=send") {
			return rawField(t, l, key)
		}
	}
	t.Fatalf("no send line for %s in status:\n%s", volume, out)
	return 0
}
