package pebble

import (
	"bytes"
	"errors"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestOptionsValidate(t *testing.T) {
	o := &Options{CacheSize: -1, MemTableSize: 10}
	err := o.Validate()
	if err == nil || !strings.Contains(err.Error(), "cache size") || !strings.Contains(err.Error(), "memtable size") {
		t.Fatalf("want both problems in one error, got %v", err)
	}
	if _, err := Open("x", o); err == nil {
		t.Fatal("Open accepted invalid options")
	}
	d := (*Options)(nil).EnsureDefaults()
	if d.FS == nil || d.CacheSize != DefaultCacheSize || d.Validate() != nil {
		t.Fatalf("defaults %+v", d)
	}
}

func TestFormatVersion(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("s", &Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Raw().Set(formatVersionKey, []byte{0, 0, 0, 9}, pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open("s", &Options{FS: fs}); !errors.Is(err, ErrFormatVersion) {
		t.Fatalf("want ErrFormatVersion, got %v", err)
	}
}

// model is what the store should hold.
type model map[string]*DirtyLogVolume

func (m model) clone() model {
	out := model{}
	for k, v := range m {
		c := *v
		c.InSync, c.Marked, c.Pending = maps.Clone(v.InSync), maps.Clone(v.Marked), maps.Clone(v.Pending)
		out[k] = &c
	}
	return out
}

func (m model) list() []DirtyLogVolume {
	var out []DirtyLogVolume
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, *m[k])
	}
	return out
}

// randomBatch applies random changes to the batch and the model.
func randomBatch(t *testing.T, rng *rand.Rand, b *DirtyLogBatch, m model) {
	for range rng.IntN(6) + 1 {
		uuid := []string{"vol-a", "vol-b"}[rng.IntN(2)]
		v := m[uuid]
		if v == nil || rng.IntN(10) == 0 {
			r := VolumeRecord{RegionSectors: 128, Regions: 9000, Sectors: 9000 * 128, NextGen: rng.Uint64N(100), Table: "core 128"}
			if err := b.PutVolume(uuid, r); err != nil {
				t.Fatal(err)
			}
			if v == nil {
				v = &DirtyLogVolume{UUID: uuid, InSync: map[uint64][]uint64{}, Marked: map[uint64][]uint64{}, Pending: map[uint64]uint64{}}
				m[uuid] = v
			}
			v.Record = r
			continue
		}
		switch rng.IntN(3) {
		case 0, 1:
			kind, dst := BitmapInSync, v.InSync
			if rng.IntN(2) == 0 {
				kind, dst = BitmapMarked, v.Marked
			}
			ch := rng.Uint64N(3)
			w := make([]uint64, ChunkWords)
			if rng.IntN(3) > 0 {
				w[rng.IntN(ChunkWords)] = rng.Uint64()
			}
			if err := b.PutChunk(kind, uuid, ch, w); err != nil {
				t.Fatal(err)
			}
			if slices.Equal(w, make([]uint64, ChunkWords)) {
				delete(dst, ch)
			} else {
				dst[ch] = w
			}
		case 2:
			r, g := rng.Uint64N(20), rng.Uint64N(3)
			if err := b.PutPending(uuid, r, g); err != nil {
				t.Fatal(err)
			}
			if g == 0 {
				delete(v.Pending, r)
			} else {
				v.Pending[r] = g
			}
		}
	}
}

// TestDirtyLogCrash takes a crash clone of the file system right after
// every synced commit returns and checks that the clone recovers exactly the
// state acknowledged at that point.
func TestDirtyLogCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db, err := Open("state", &Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	m := model{}
	type point struct {
		fs   *vfs.MemFS
		want model
	}
	var points []point
	for i := range 60 {
		b := db.NewDirtyLogBatch()
		randomBatch(t, rng, b, m)
		sync := i%3 == 2
		if err := b.Commit(sync); err != nil {
			t.Fatal(err)
		}
		if sync {
			points = append(points, point{fs.CrashClone(vfs.CrashCloneCfg{}), m.clone()})
		}
	}
	// An empty synced batch makes earlier unsynced commits durable.
	b := db.NewDirtyLogBatch()
	randomBatch(t, rng, b, m)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if err := db.NewDirtyLogBatch().Commit(true); err != nil {
		t.Fatal(err)
	}
	points = append(points, point{fs.CrashClone(vfs.CrashCloneCfg{}), m.clone()})
	db.Close()
	for i, p := range points {
		cdb, err := Open("state", &Options{FS: p.fs})
		if err != nil {
			t.Fatalf("point %d: %v", i, err)
		}
		got, err := cdb.LoadDirtyLog()
		cdb.Close()
		if err != nil {
			t.Fatalf("point %d: %v", i, err)
		}
		if want := p.want.list(); !reflect.DeepEqual(got, want) {
			t.Fatalf("point %d: recovered\n%+v\nwant\n%+v", i, got, want)
		}
	}
	if len(points) < 20 {
		t.Fatalf("only %d sync points", len(points))
	}
}

func TestDirtyLogBadInput(t *testing.T) {
	db, err := Open("s", &Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewDirtyLogBatch()
	defer b.Close()
	if b.PutVolume("", VolumeRecord{}) == nil || b.PutVolume(strings.Repeat("x", 129), VolumeRecord{}) == nil {
		t.Error("bad uuid accepted")
	}
	if b.PutChunk(BitmapKind(0x55), "a", 0, nil) == nil || b.PutChunk(BitmapInSync, "a", 0, make([]uint64, 65)) == nil {
		t.Error("bad chunk accepted")
	}
	// A chunk without its volume record is corruption, not silently dropped.
	if err := db.Raw().Set([]byte{0x13, 1, 'z', 0, 0, 0, 0, 0, 0, 0, 1}, []byte{0, 0, 0, 0, 0, 0, 0, 1}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.LoadDirtyLog(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("want ErrCorrupt, got %v", err)
	}
}

// FuzzDirtyLogKey: keys that decode re-encode to the same bytes.
func FuzzDirtyLogKey(f *testing.F) {
	k, _ := dirtyLogKey{prefix: prefixPending, uuid: "LVM-x", n: 7}.append(nil)
	f.Add(k)
	k, _ = dirtyLogKey{prefix: prefixVolume, uuid: "u"}.append(nil)
	f.Add(k)
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeDirtyLogKey(b)
		if err != nil {
			return
		}
		enc, err := k.append(nil)
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("%x -> %+v -> %x (%v)", b, k, enc, err)
		}
	})
}

func FuzzVolumeRecord(f *testing.F) {
	f.Add((&VolumeRecord{1, 2, 3, 4, "core 8"}).append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeVolumeRecord(b)
		if err != nil {
			return
		}
		if enc := r.append(nil); !bytes.Equal(enc, b) {
			t.Fatalf("%x -> %x", b, enc)
		}
	})
}
