package rpc

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/dmsync/dmsync/pebble"
)

func randomID(r *rand.Rand) ID {
	var id ID
	for i := range id {
		id[i] = byte(r.Uint32())
	}
	return id
}

// TestIDFilter: every id added or indexed is reported held (no false
// negatives, which would lose a copy), few ids never added are, and the
// filter is rebuilt from the index once it took in twice its size.
func TestIDFilter(t *testing.T) {
	db, err := pebbledb.Open(filepath.Join(t.TempDir(), "db"), &pebbledb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := pebble.NewReplicaStore(db)
	r := rand.New(rand.NewPCG(1, 2))
	// The index holds 100 chunks before the filter is first built.
	var indexed []pebble.ReplicaChunk
	for i := range 100 {
		indexed = append(indexed, pebble.ReplicaChunk{Offset: uint64(i) * 4096, Length: 4096, ID: randomID(r)})
	}
	if err := st.CommitApplied("v", 1, []pebble.ByteRange{{Start: 0, End: 100 * 4096}}, indexed); err != nil {
		t.Fatal(err)
	}
	var f idFilter
	f.add(indexed) // before the first build: nothing to add to
	if f.bits != nil {
		t.Fatal("add built the filter")
	}
	const expect = 100000
	if err := f.ensure(st, "v", expect); err != nil {
		t.Fatal(err)
	}
	for _, c := range indexed {
		if !f.mayHold(c.ID) {
			t.Fatalf("indexed id %x reported absent", c.ID[:4])
		}
	}
	var added []pebble.ReplicaChunk
	for i := range expect - 100 {
		added = append(added, pebble.ReplicaChunk{Offset: uint64(i) * 4096, Length: 4096, ID: randomID(r)})
	}
	f.add(added)
	for _, c := range added {
		if !f.mayHold(c.ID) {
			t.Fatalf("added id %x reported absent", c.ID[:4])
		}
	}
	false_ := 0
	const probes = 100000
	for range probes {
		if f.mayHold(randomID(r)) {
			false_++
		}
	}
	if rate := float64(false_) / probes; rate > 0.005 {
		t.Errorf("false positives at the expected load: %.3f%%, want < 0.5%%", rate*100)
	}
	if err := f.ensure(st, "v", expect); err != nil || f.builds != 1 {
		t.Fatalf("ensure within the limit rebuilt (builds %d, err %v)", f.builds, err)
	}
	// Past its capacity the next ensure reads the index again: ids that
	// were only added (not indexed) are then gone.
	f.add(make([]pebble.ReplicaChunk, expect+200))
	if err := f.ensure(st, "v", expect); err != nil || f.builds != 2 {
		t.Fatalf("ensure past the limit did not rebuild (builds %d, err %v)", f.builds, err)
	}
	for _, c := range indexed {
		if !f.mayHold(c.ID) {
			t.Fatalf("after the rebuild, indexed id %x reported absent", c.ID[:4])
		}
	}
	gone := 0
	for _, c := range added {
		if f.mayHold(c.ID) {
			gone++
		}
	}
	if gone > len(added)/100 {
		t.Errorf("after the rebuild %d of %d ids that were never indexed are still reported held", gone, len(added))
	}
}
