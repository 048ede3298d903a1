package rpc

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
)

// pointRig is a receiver with a staging directory, over a store that
// survives rebuilding the receiver (a restart).
type pointRig struct {
	img *memImage
	st  *pebble.ReplicaStore
	dir string
	r   *Receiver
}

func newPointRig(t *testing.T) *pointRig {
	t.Helper()
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p := &pointRig{img: &memImage{b: make([]byte, tSize)}, st: pebble.NewReplicaStore(db), dir: t.TempDir()}
	p.restart(t)
	return p
}

// restart rebuilds the receiver over the same store, image and staging
// directory, as a new process would.
func (p *pointRig) restart(t *testing.T) {
	t.Helper()
	r, err := NewReceiver(ReceiverConfig{Store: p.st, StagingDir: p.dir, Volumes: []ReceiveVolume{{Name: tVol, Image: p.img, Size: tSize, Params: tParams, Senders: []string{tPeer}}}})
	if err != nil {
		t.Fatal(err)
	}
	p.r = r
}

func (p *pointRig) image() []byte {
	p.img.mu.Lock()
	defer p.img.mu.Unlock()
	return bytes.Clone(p.img.b)
}

// stageRange offers [start,end) of src as a batch of point token.
func stageRange(t *testing.T, r *Receiver, token uint64, src []byte, start, end uint64) {
	t.Helper()
	o, data := offerFor(t, src, start, end)
	o.Point = token
	apply(t, r, o, data)
}

func commitPoint(r *Receiver, token uint64, batches int) (Committed, error) {
	return r.CommitPoint(context.Background(), tPeer, Commit{Volume: tVol, Point: token, Batches: batches, TakenAt: time.Unix(1700000000, 0)})
}

func checkRoot(t *testing.T, r *Receiver, want []byte) RootInfo {
	t.Helper()
	info, err := r.Root(tPeer, tVol)
	if err != nil {
		t.Fatal(err)
	}
	root, _, _ := SourceRoot(FixedChunker{Size: tChunk}, bytes.NewReader(want), tSize)
	if info.Root != root {
		t.Fatal("the index does not describe the image's expected bytes")
	}
	return info
}

// TestPointStagesUntilCommit: a point's batches leave image and index as
// they were (the last point) until the commit, which applies them all;
// a range staged twice in one point ends with the later batch's bytes,
// even where the later batch found the chunk present in the image.
func TestPointStagesUntilCommit(t *testing.T) {
	p := newPointRig(t)
	v0 := pattern(1)
	stageRange(t, p.r, 1, v0, 0, tSize)
	if _, err := commitPoint(p.r, 1, 1); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.image(), v0) {
		t.Fatal("first point not applied")
	}
	// Point 2: chunks 0..8 get new bytes, then a second batch over 4..12
	// offers v0 again for 4..8 (the region was written back): present in
	// the image, but staged over by the first batch.
	v1 := bytes.Clone(v0)
	copy(v1[0:8*tChunk], randomVolume(rand.New(rand.NewPCG(2, 2)), 8*tChunk))
	stageRange(t, p.r, 2, v1, 0, 8*tChunk)
	v2 := bytes.Clone(v1)
	copy(v2[4*tChunk:12*tChunk], v0[4*tChunk:12*tChunk])
	stageRange(t, p.r, 2, v2, 4*tChunk, 12*tChunk)
	if !bytes.Equal(p.image(), v0) {
		t.Fatal("staged batches changed the image before the commit")
	}
	checkRoot(t, p.r, v0)
	if _, err := commitPoint(p.r, 2, 3); !errors.Is(err, ErrPointLost) {
		t.Fatalf("commit with a batch count the receiver does not hold: %v, want ErrPointLost", err)
	}
	c, err := commitPoint(p.r, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if c.Point.Seq != 2 {
		t.Fatalf("recovery point seq %d, want 2", c.Point.Seq)
	}
	if !bytes.Equal(p.image(), v2) {
		t.Fatal("the image after the commit is not the point's bytes")
	}
	checkRoot(t, p.r, v2)
	if ents, _ := os.ReadDir(p.dir); len(ents) != 0 {
		t.Fatalf("staging files left after the point was applied: %d", len(ents))
	}
}

// TestPointRefusesInPlace: once the replica holds a point, a batch that
// would be written in place is refused.
func TestPointRefusesInPlace(t *testing.T) {
	p := newPointRig(t)
	v0 := pattern(3)
	o, data := offerFor(t, v0, 0, tSize)
	apply(t, p.r, o, data) // before any point: in place
	if _, err := commitPoint(p.r, 7, 0); err != nil {
		t.Fatalf("empty first point: %v", err)
	}
	o, _ = offerFor(t, pattern(4), 0, 8*tChunk)
	if _, _, err := p.r.Begin(context.Background(), tPeer, o); !errors.Is(err, ErrStaged) {
		t.Fatalf("in-place batch against a replica with a point: %v, want ErrStaged", err)
	}
	p.restart(t)
	if _, _, err := p.r.Begin(context.Background(), tPeer, o); !errors.Is(err, ErrStaged) {
		t.Fatalf("after a restart: %v, want ErrStaged", err)
	}
	if info, _ := p.r.Root(tPeer, tVol); info.Point.Seq != 1 {
		t.Fatalf("recovery point after restart: %+v", info.Point)
	}
}

// TestPointCrash: a point staged but not committed is dropped at restart
// (the image stays the last point and the commit is refused); a point
// committed but not applied is applied at restart.
func TestPointCrash(t *testing.T) {
	p := newPointRig(t)
	v0 := pattern(5)
	stageRange(t, p.r, 1, v0, 0, tSize)
	if _, err := commitPoint(p.r, 1, 1); err != nil {
		t.Fatal(err)
	}
	v1 := bytes.Clone(v0)
	copy(v1[16*tChunk:32*tChunk], randomVolume(rand.New(rand.NewPCG(6, 6)), 16*tChunk))
	stageRange(t, p.r, 2, v1, 16*tChunk, 32*tChunk)
	p.restart(t) // crash before the commit
	if !bytes.Equal(p.image(), v0) {
		t.Fatal("uncommitted point touched the image")
	}
	if _, err := commitPoint(p.r, 2, 1); !errors.Is(err, ErrPointLost) {
		t.Fatalf("commit after the receiver lost the staged batch: %v, want ErrPointLost", err)
	}
	checkRoot(t, p.r, v0)

	// Stage again, commit in the store, and crash before applying: the
	// restart applies the point.
	stageRange(t, p.r, 3, v1, 16*tChunk, 32*tChunk)
	if err := p.st.CommitStaging(tVol, 3, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	p.restart(t)
	if !bytes.Equal(p.image(), v1) {
		t.Fatal("committed point not applied at restart")
	}
	info := checkRoot(t, p.r, v1)
	if info.Point.Seq != 2 {
		t.Fatalf("recovery point after re-apply: %+v", info.Point)
	}
}

// TestPointTornRedoIsNotApplied: a redo record whose bytes do not match
// their checksum stops the apply before anything is written: the point is
// not recorded and the image stays as it was.
func TestPointTornRedoIsNotApplied(t *testing.T) {
	p := newPointRig(t)
	v0 := pattern(8)
	stageRange(t, p.r, 1, v0, 0, 8*tChunk)
	stageRange(t, p.r, 1, v0, 8*tChunk, 16*tChunk)
	ents, err := os.ReadDir(p.dir)
	if err != nil || len(ents) != 2 {
		t.Fatalf("staging files: %v %v", ents, err)
	}
	path := p.dir + "/" + ents[1].Name() // the second batch's: the first is good
	b, _ := os.ReadFile(path)
	b[len(b)-1] ^= 0xff
	os.WriteFile(path, b, 0o600)
	if _, err := commitPoint(p.r, 1, 2); err == nil {
		t.Fatal("a corrupt staging file was applied")
	}
	if !bytes.Equal(p.image(), make([]byte, tSize)) {
		t.Fatal("the good batch was written before the corrupt one was found: the image is torn")
	}
	if info, _ := p.r.Root(tPeer, tVol); info.Point.Seq != 0 {
		t.Fatalf("a point was recorded: %+v", info.Point)
	}
}

// TestPointApplyFailureIsNotDropped: a point committed but not applied
// (the image's disk failed mid-apply) leaves the image torn; its staging
// must survive the sender's next point, which applies it first. (Found by
// TestPointsWriteOrder: the next point's first batch dropped the staging,
// and the replica stayed torn under its recovery point.)
func TestPointApplyFailureIsNotDropped(t *testing.T) {
	p := newPointRig(t)
	v0 := pattern(9)
	stageRange(t, p.r, 1, v0, 0, tSize)
	if _, err := commitPoint(p.r, 1, 1); err != nil {
		t.Fatal(err)
	}
	v1 := bytes.Clone(v0)
	copy(v1, randomVolume(rand.New(rand.NewPCG(9, 9)), 32*tChunk))
	stageRange(t, p.r, 2, v1, 0, 16*tChunk)
	stageRange(t, p.r, 2, v1, 16*tChunk, 32*tChunk)
	p.img.fail(errors.New("injected EIO"))
	if _, err := commitPoint(p.r, 2, 2); err == nil {
		t.Fatal("the apply wrote to a failing disk and succeeded")
	}
	if info, _ := p.r.Root(tPeer, tVol); !info.Applying {
		t.Fatal("a committed point not applied does not show as applying")
	}
	p.img.fail(nil)
	// The sender, told the commit failed, starts point 3 over a range.
	stageRange(t, p.r, 3, v1, 0, 8*tChunk)
	if !bytes.Equal(p.image(), v1) {
		t.Fatal("the committed point was dropped instead of applied: the image is torn")
	}
	if info, _ := p.r.Root(tPeer, tVol); info.Applying || info.Point.Seq != 2 {
		t.Fatalf("after the re-apply: applying %v, point %d (want false, 2)", info.Applying, info.Point.Seq)
	}
}
