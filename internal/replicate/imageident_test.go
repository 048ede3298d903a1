package replicate

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

func TestIdentChange(t *testing.T) {
	file := pebble.ImageIdent{Node: "A", Kind: kindFile, Dev: 2049, Ino: 12, Size: 1 << 20, Birth: 1000, Tag: "replica:1"}
	block := pebble.ImageIdent{Node: "A", Kind: kindBlock, Dev: 253<<8 | 1, Size: 1 << 30, Tag: "dm-uuid:CRYPT-x"}
	bare := pebble.ImageIdent{Node: "A", Kind: kindBlock, Dev: 252<<8 | 32, Size: 1 << 30} // a disk with no stable id
	with := func(id pebble.ImageIdent, f func(*pebble.ImageIdent)) pebble.ImageIdent { f(&id); return id }
	for _, tc := range []struct {
		name     string
		was, now pebble.ImageIdent
		want     string // a word of the reason; "" for the same image
	}{
		{"same file", file, file, ""},
		{"same device", block, block, ""},
		{"same bare device", bare, bare, ""},
		{"block device renumbered, same id", block, with(block, func(i *pebble.ImageIdent) { i.Dev = 253<<8 | 7 }), ""},
		{"file without birth time recorded", with(file, func(i *pebble.ImageIdent) { i.Birth = 0 }), file, ""},
		{"another node", file, with(file, func(i *pebble.ImageIdent) { i.Node = "B" }), "copied from another node"},
		{"file became a device", file, block, "is now a block device"},
		{"new file: no replica id", file, with(file, func(i *pebble.ImageIdent) { i.Tag = "" }), "id is none"},
		{"another replica's file", file, with(file, func(i *pebble.ImageIdent) { i.Tag = "replica:2" }), "another file"},
		{"another inode, same id (a copy with xattrs)", file, with(file, func(i *pebble.ImageIdent) { i.Ino = 13 }), "inode 13"},
		{"another file system", file, with(file, func(i *pebble.ImageIdent) { i.Dev = 2050 }), "another file"},
		{"inode reused, another birth", file, with(file, func(i *pebble.ImageIdent) { i.Birth = 2000 }), "created"},
		{"file cut", file, with(file, func(i *pebble.ImageIdent) { i.Size = 4096 }), "holds 4096 bytes"},
		{"another device id", block, with(block, func(i *pebble.ImageIdent) { i.Tag = "dm-uuid:CRYPT-y" }), "another block device"},
		{"device lost its id", block, with(block, func(i *pebble.ImageIdent) { i.Tag = "" }), "another block device"},
		{"device resized", block, with(block, func(i *pebble.ImageIdent) { i.Size = 1 << 29 }), "bytes"},
		{"bare device renumbered", bare, with(bare, func(i *pebble.ImageIdent) { i.Dev = 252<<8 | 48 }), "device 252:48"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := identChange(tc.was, tc.now)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("identChange = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBlockTag(t *testing.T) {
	sys := t.TempDir()
	dev := filepath.Join(sys, "devices")
	mk := func(path, name, val string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(path, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(path, name), []byte(val), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(majmin, target string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(sys, "dev", "block"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(sys, "dev", "block", majmin)); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(dev, "dm-0"), "dm/uuid", "CRYPT-LUKS2-abc-demo\n")
	mk(filepath.Join(dev, "dm-0"), "dm/name", "demo\n")
	link("253:0", filepath.Join(dev, "dm-0"))
	mk(filepath.Join(dev, "dm-1"), "dm/uuid", "\n") // dmsetup create without --uuid
	mk(filepath.Join(dev, "dm-1"), "dm/name", "sink\n")
	link("253:1", filepath.Join(dev, "dm-1"))
	mk(filepath.Join(dev, "sda"), "device/wwid", "naa.5000c500a1b2c3d4\n")
	mk(filepath.Join(dev, "sda", "sda2"), "partition", "2\n")
	mk(filepath.Join(dev, "sda", "sda2"), "start", "2048\n")
	link("8:0", filepath.Join(dev, "sda"))
	link("8:2", filepath.Join(dev, "sda", "sda2"))
	mk(filepath.Join(dev, "vdc"), "serial", "\n") // a virtio disk given no serial
	link("252:32", filepath.Join(dev, "vdc"))
	mk(filepath.Join(dev, "vdd"), "serial", "disk-d\n")
	link("252:48", filepath.Join(dev, "vdd"))
	mk(filepath.Join(dev, "loop0"), "loop/backing_file", "/srv/replica.img\n")
	link("7:0", filepath.Join(dev, "loop0"))
	for _, tc := range []struct {
		major, minor uint32
		want         string
	}{
		{253, 0, "dm-uuid:CRYPT-LUKS2-abc-demo"},
		{253, 1, "dm-name:sink"},
		{8, 0, "wwid:naa.5000c500a1b2c3d4"},
		{8, 2, "wwid:naa.5000c500a1b2c3d4/part2@2048"},
		{252, 32, ""},
		{252, 48, "serial:disk-d"},
		{7, 0, "loop:/srv/replica.img"},
		{9, 9, ""}, // no such device
	} {
		if got := blockTag(sys, tc.major, tc.minor); got != tc.want {
			t.Errorf("%d:%d: %q, want %q", tc.major, tc.minor, got, tc.want)
		}
	}
}

// TestImageIdentOfFile reads a real file's identity: a new file at the
// same path is another image, and the replica id set at bind is read back.
func TestImageIdentOfFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	open := func() *os.File {
		t.Helper()
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := f.Truncate(1 << 20); err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := open()
	a, err := imageIdentOf(f, "N")
	if err != nil {
		t.Fatal(err)
	}
	if a.Kind != kindFile || a.Size != 1<<20 || a.Ino == 0 || a.Node != "N" || a.Tag != "" {
		t.Fatalf("identity of a new file: %+v", a)
	}
	tag, err := newReplicaID(f)
	if err != nil {
		t.Fatal(err)
	}
	if tag == "" {
		t.Log("this file system keeps no user xattrs: files are known by device, inode, birth and size")
	}
	b, err := imageIdentOf(f, "N")
	if err != nil {
		t.Fatal(err)
	}
	if b.Tag != tag {
		t.Fatalf("replica id read back %q, set %q", b.Tag, tag)
	}
	a.Tag = tag
	if why := identChange(a, b); why != "" {
		t.Fatalf("the same file changed: %s", why)
	}
	os.Remove(path)
	c, err := imageIdentOf(open(), "N")
	if err != nil {
		t.Fatal(err)
	}
	if why := identChange(b, c); why == "" {
		t.Fatalf("a new file at the same path is the same image: was %+v, now %+v", b, c)
	}
}

// restartReceiver makes n's receiver reopen its images, as a daemon
// restart does.
func restartReceiver(n *node) {
	n.m.mu.Lock()
	gen := n.m.restartReceiverLocked()
	n.m.mu.Unlock()
	waitReceiver(gen)
}

func problemWith(n *node, word string) string {
	for _, p := range n.m.Problems() {
		if strings.Contains(p, word) {
			return p
		}
	}
	return ""
}

// replicatedPair replicates a random volume from a new node A to a new
// node B and returns them, the source data and B's replica path.
func replicatedPair(t *testing.T) (a, b *node, data []byte, replica string) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	b = newNode(t, freeAddr(t))
	a = newNode(t, "", withPendAll)
	data = make([]byte, testSize)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(a.src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a.log.AddVolume("uuid-vol", testRegion, testRegions)
	replica = filepath.Join(b.dir, "replica.img")
	if err := b.m.Receive(Receive{Volume: "uuid-vol", From: a.id.ID, Image: replica, Size: testSize}); err != nil {
		t.Fatal(err)
	}
	if err := a.m.AddPeer(Peer{ID: b.id.ID, Addr: b.m.opts.Listen}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Replicate(context.Background(), "vol", b.id.ID); err != nil {
		t.Fatal(err)
	}
	waitReplica(t, a, replica, data)
	return a, b, data, replica
}

func verifyEqual(t *testing.T, a *node) VerifyResult {
	t.Helper()
	v, err := a.m.Verify(context.Background(), "vol", VerifyOptions{Index: true})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestReceiveImageSwapped: a replica image replaced by a fresh zero file
// must not keep the old image's index (it would show as replicated and
// verify equal); the next batches rebuild it.
func TestReceiveImageSwapped(t *testing.T) {
	a, b, data, replica := replicatedPair(t)
	if v := verifyEqual(t, a); !v.Equal {
		t.Fatalf("not equal after replication: %+v", v)
	}
	// The same image reopened keeps its index.
	restartReceiver(b)
	if v := verifyEqual(t, a); !v.Equal {
		t.Fatalf("the same image reopened lost its index: %+v", v)
	}
	if ps := b.m.Problems(); len(ps) != 0 {
		t.Fatalf("problems after reopening the same image: %q", ps)
	}

	// Swap the image for a fresh file of zeros at the same path.
	if err := os.Remove(replica); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(replica, make([]byte, testSize), 0o600); err != nil {
		t.Fatal(err)
	}
	restartReceiver(b)
	v := verifyEqual(t, a)
	if v.Equal || v.Replica.Chunks != 0 {
		t.Fatalf("verify after the image was swapped for zeros: equal=%v replica chunks=%d, want not equal and an empty replica", v.Equal, v.Replica.Chunks)
	}
	if p := problemWith(b, "reset to empty"); p == "" || !strings.Contains(p, "resync") {
		t.Fatalf("B's problems do not tell of the reset and its fix: %q", b.m.Problems())
	}
	recv := b.m.Receiving()
	if len(recv) != 1 || recv[0].Err != nil || recv[0].Root.Chunks != 0 {
		t.Fatalf("B's receive status %+v, want an empty replica", recv)
	}

	// The fix the problem names: a resync on the sender sends it all
	// again, though the running sender had seen all of it acknowledged.
	sentBefore := a.m.Status()[0].Stats.BytesSent
	if _, err := a.m.Resync(context.Background(), "vol"); err != nil {
		t.Fatal(err)
	}
	st := waitReplica(t, a, replica, data)
	if sent := st.Stats.BytesSent - sentBefore; sent < testSize {
		t.Errorf("the resync sent %d bytes, want the whole %d-byte volume", sent, testSize)
	}
	if v := verifyEqual(t, a); !v.Equal {
		t.Fatalf("not equal after the resync into the new image: %+v", v)
	}
	// The replica is whole again: the reset is no longer a problem.
	if p := problemWith(b, "reset to empty"); p != "" {
		t.Fatalf("B still reports the reset after the resync made its replica whole: %q", p)
	}
}

// TestReceiveStoreCopiedFromAnotherNode: a replica store copied into
// another node's state directory is not trusted, even over the very image
// it describes.
func TestReceiveStoreCopiedFromAnotherNode(t *testing.T) {
	a, b, _, replica := replicatedPair(t)
	if v := verifyEqual(t, a); !v.Equal {
		t.Fatalf("not equal after replication: %+v", v)
	}
	dirC := t.TempDir()
	if err := b.db.Raw().Checkpoint(filepath.Join(dirC, "pebble")); err != nil {
		t.Fatal(err)
	}
	b.stop()
	chunksB := 0
	if err := pebble.NewReplicaStore(b.db.Raw()).Chunks("uuid-vol", func(pebble.ReplicaChunk) error { chunksB++; return nil }); err != nil || chunksB == 0 {
		t.Fatalf("B's store holds %d chunks (%v)", chunksB, err)
	}

	c := newNodeIn(t, dirC, freeAddr(t))
	if err := c.m.Receive(Receive{Volume: "uuid-vol", From: a.id.ID, Image: replica, Size: testSize}); err != nil {
		t.Fatal(err)
	}
	recv := receiving(t, c)
	if len(recv) != 1 || recv[0].Root.Chunks != 0 {
		t.Fatalf("C's receive status %+v, want an empty replica (B's store held %d chunks)", recv, chunksB)
	}
	if p := problemWith(c, "another node"); p == "" {
		t.Fatalf("C's problems do not tell of the copied store: %q", c.m.Problems())
	}
	id, ok, err := pebble.NewReplicaStore(c.db.Raw()).ImageIdent("uuid-vol")
	if err != nil || !ok || id.Node != c.id.ID {
		t.Fatalf("C's store is not bound to C: %+v %v %v", id, ok, err)
	}
}

// receiving returns n's receive status once its receiver runs.
func receiving(t *testing.T, n *node) []ReceiveStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs := n.m.Receiving()
		if len(rs) > 0 && rs[0].Err == nil || time.Now().After(deadline) {
			if len(rs) == 0 || rs[0].Err != nil {
				t.Fatalf("receiver not serving: %+v", rs)
			}
			return rs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// withPendAll gives a node's fake dirty log PendAll, as logd.Server has.
func withPendAll(o *Options) { o.Log = pendLog{o.Log.(*rpctest.FakeLog)} }

// pendLog is the fake dirty log with PendAll (logd.Server has it).
type pendLog struct{ *rpctest.FakeLog }

func (l pendLog) PendAll(uuid string) error {
	_, n, err := l.RegionSize(uuid)
	if err != nil {
		return err
	}
	for r := range n {
		l.Write(uuid, r)
	}
	return nil
}
