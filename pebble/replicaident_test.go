package pebble

import "testing"

func TestImageIdentRoundTrip(t *testing.T) {
	s := memStore(t)
	if _, ok, err := s.ImageIdent("v"); ok || err != nil {
		t.Fatalf("empty store: ok=%v err=%v", ok, err)
	}
	for _, id := range []ImageIdent{
		{},
		{Node: "NODE", Kind: "file", Dev: 2049, Ino: 1234, Size: 1 << 30, Birth: -5, Tag: "replica:abc"},
		{Node: "N", Kind: "block", Dev: 253<<8 | 3, Size: 4096, Tag: "dm-uuid:CRYPT-LUKS2-x"},
	} {
		if err := s.SetImageIdent("v", id); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.ImageIdent("v")
		if err != nil || !ok || got != id {
			t.Fatalf("got %+v ok=%v err=%v, want %+v", got, ok, err, id)
		}
	}
	long := string(make([]byte, 256))
	if err := s.SetImageIdent("v", ImageIdent{Tag: long}); err == nil {
		t.Fatal("a 256-byte tag was stored")
	}
}

func TestDecodeImageIdentCorrupt(t *testing.T) {
	good, err := encodeImageIdent(ImageIdent{Node: "n", Kind: "file", Tag: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range good {
		if _, err := decodeImageIdent(good[:i]); err == nil {
			t.Errorf("a value cut to %d bytes decoded", i)
		}
	}
	bad := append([]byte{2}, good[1:]...)
	if _, err := decodeImageIdent(bad); err == nil {
		t.Error("an unknown version decoded")
	}
	if _, err := decodeImageIdent(append(good, 0)); err == nil {
		t.Error("trailing bytes decoded")
	}
}

func TestDropReplica(t *testing.T) {
	s := memStore(t)
	fill := func(vol string) {
		if err := s.SetMeta(vol, ReplicaMeta{Size: 1 << 20, Algorithm: "fixed", Min: 4096, Avg: 4096, Max: 4096}); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkApplying(vol, 1, []ByteRange{{0, 8192}}); err != nil {
			t.Fatal(err)
		}
		if err := s.CommitApplied(vol, 1, []ByteRange{{0, 8192}}, []ReplicaChunk{rc(0, 4096, 1), rc(4096, 4096, 2)}); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkApplying(vol, 2, []ByteRange{{8192, 12288}}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetImageIdent(vol, ImageIdent{Node: "n", Kind: "file", Ino: 7}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetProgress(vol, "peer", SendProgress{Chunks: 3}); err != nil {
			t.Fatal(err)
		}
		if err := s.FinishPoint(vol, RecoveryPoint{Seq: 1, Token: 9}); err != nil {
			t.Fatal(err)
		}
		if err := s.BeginStaging(vol, 10); err != nil {
			t.Fatal(err)
		}
		if err := s.StageBatch(vol, 10, StagedBatch{Batch: 3, RedoBytes: 4096, Ranges: []ByteRange{{0, 4096}}, Chunks: []ReplicaChunk{rc(0, 4096, 3)}}); err != nil {
			t.Fatal(err)
		}
	}
	points := func(vol string) (bool, bool, int) {
		t.Helper()
		_, staging, err := s.Staging(vol)
		if err != nil {
			t.Fatal(err)
		}
		_, point, err := s.Point(vol)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := s.StagedBatches(vol)
		if err != nil {
			t.Fatal(err)
		}
		return staging, point, len(sb)
	}
	// "v" and "vv" share a first byte: dropping one must keep the other.
	fill("v")
	fill("vv")
	if ok, err := s.HasReplica("v"); !ok || err != nil {
		t.Fatalf("HasReplica before drop: %v %v", ok, err)
	}
	if err := s.DropReplica("v"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.HasReplica("v"); ok || err != nil {
		t.Fatalf("HasReplica after drop: %v %v", ok, err)
	}
	if _, ok, _ := s.Meta("v"); ok {
		t.Error("meta survived the drop")
	}
	if cs := listChunks(t, s, "v"); len(cs) != 0 {
		t.Errorf("index survived the drop: %v", cs)
	}
	if _, ok, _ := s.FindChunk("v", [32]byte{1}, func(ReplicaChunk) bool { return false }); ok {
		t.Error("by-id entry survived the drop")
	}
	if ms, _ := s.Applying("v"); len(ms) != 0 {
		t.Errorf("markers survived the drop: %v", ms)
	}
	if _, ok, _ := s.ImageIdent("v"); ok {
		t.Error("image identity survived the drop")
	}
	if staging, point, staged := points("v"); staging || point || staged != 0 {
		t.Errorf("points survived the drop: staging %v, recovery point %v, %d staged batches", staging, point, staged)
	}
	if staging, point, staged := points("vv"); !staging || !point || staged != 1 {
		t.Errorf("another volume's points were dropped: staging %v, recovery point %v, %d staged batches", staging, point, staged)
	}
	if p, ok, _ := s.Progress("v", "peer"); !ok || p.Chunks != 3 {
		t.Errorf("the sender's progress was dropped too: %+v %v", p, ok)
	}
	if _, ok, _ := s.Meta("vv"); !ok {
		t.Error("another volume's meta was dropped")
	}
	if cs := listChunks(t, s, "vv"); len(cs) != 2 {
		t.Errorf("another volume's index was dropped: %v", cs)
	}
	if ms, _ := s.Applying("vv"); len(ms) != 1 {
		t.Errorf("another volume's markers were dropped: %v", ms)
	}
	if _, ok, _ := s.ImageIdent("vv"); !ok {
		t.Error("another volume's identity was dropped")
	}
}
