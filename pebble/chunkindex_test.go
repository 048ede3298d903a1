package pebble

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/blockhash"
)

var testParams = IndexParams{Version: blockhash.FormatVersion, Min: 512, Avg: 2048, Max: 8192}

// The tests use blockhash to make realistic chunk lists; pebble itself
// does not import it.
func toIndex(l []blockhash.Chunk) []IndexChunk {
	out := make([]IndexChunk, len(l))
	for i, c := range l {
		out[i] = IndexChunk(c)
	}
	return out
}

func fromIndex(l []IndexChunk) []blockhash.Chunk {
	out := make([]blockhash.Chunk, len(l))
	for i, c := range l {
		out[i] = blockhash.Chunk(c)
	}
	return out
}

func openMem(t testing.TB, fs vfs.FS) *pebbledb.DB {
	t.Helper()
	db, err := pebbledb.Open("db", &pebbledb.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func randomVolume(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

func chunker(t testing.TB) *blockhash.Chunker {
	t.Helper()
	c, err := blockhash.NewChunker(blockhash.Params(testParams))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func chunkAll(t testing.TB, data []byte) []IndexChunk {
	t.Helper()
	list, _, err := chunker(t).All(context.Background(), bytes.NewReader(data), uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return toIndex(list)
}

// wantRefcounts counts chunk ids over the given lists.
func wantRefcounts(lists ...[]IndexChunk) map[[32]byte]uint64 {
	m := map[[32]byte]uint64{}
	for _, l := range lists {
		for _, c := range l {
			m[c.ID]++
		}
	}
	return m
}

// checkRefcounts verifies the stored refcounts equal want, and that no other
// refcount key exists.
func checkRefcounts(t testing.TB, db *pebbledb.DB, want map[[32]byte]uint64) {
	t.Helper()
	x := NewChunkIndex(db)
	for id, n := range want {
		got, err := x.Refcount(id)
		if err != nil {
			t.Fatal(err)
		}
		if got != n {
			t.Errorf("refcount of %x = %d, want %d", id[:4], got, n)
		}
	}
	it, err := db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{prefixRefcount}, UpperBound: []byte{prefixRefcount + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	if n != len(want) {
		t.Errorf("%d refcount keys stored, want %d", n, len(want))
	}
}

// rehash changes a few ranges of data and returns the new bytes, list and diff.
func rehash(t testing.TB, rng *rand.Rand, data []byte, old []IndexChunk) ([]byte, []IndexChunk, IndexDiff) {
	t.Helper()
	after := bytes.Clone(data)
	var changes []blockhash.Range
	for range 1 + rng.IntN(4) {
		off := rng.IntN(len(after))
		n := min(len(after)-off, 1+rng.IntN(6000))
		for i := off; i < off+n; i++ {
			after[i] = byte(rng.Uint32())
		}
		changes = append(changes, blockhash.Range{Off: uint64(off), Len: uint64(n)})
	}
	list, d, err := chunker(t).Rehash(context.Background(), "v", bytes.NewReader(after), uint64(len(after)), fromIndex(old), changes)
	if err != nil {
		t.Fatal(err)
	}
	return after, toIndex(list), IndexDiff{Removed: toIndex(d.Removed), Added: toIndex(d.Added)}
}

func TestChunkIndexCreateLoadApply(t *testing.T) {
	db := openMem(t, vfs.NewMem())
	defer db.Close()
	x := NewChunkIndex(db)
	rng := rand.New(rand.NewPCG(1, 1))

	a := randomVolume(1, 300000)
	// Volume "b" shares a's first 100000 bytes and has zeros: repeated ids.
	b := append(bytes.Clone(a[:100000]), make([]byte, 200000)...)
	la, lb := chunkAll(t, a), chunkAll(t, b)
	for _, v := range []struct {
		name string
		list []IndexChunk
		size int
	}{{"a", la, len(a)}, {"ab", lb, len(b)}} {
		if err := x.Create(v.name, VolumeInfo{Params: testParams, Size: uint64(v.size)}, v.list); err != nil {
			t.Fatal(err)
		}
	}
	checkRefcounts(t, db, wantRefcounts(la, lb))

	for i := range 20 {
		var d IndexDiff
		a, la, d = rehash(t, rng, a, la)
		root := [32]byte{byte(i)}
		if err := x.Apply("a", d, root); err != nil {
			t.Fatal(err)
		}
		info, got, err := x.Load("a")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, la) {
			t.Fatalf("step %d: loaded list differs from the rehashed list", i)
		}
		if info.Root != root || info.Chunks != uint64(len(la)) || info.Size != uint64(len(a)) || info.Params != testParams {
			t.Fatalf("step %d: info %+v", i, info)
		}
		checkRefcounts(t, db, wantRefcounts(la, lb))
	}
	if _, got, err := x.Load("ab"); err != nil || !slices.Equal(got, lb) {
		t.Fatalf("volume ab changed: %v", err)
	}
	// Re-creating replaces; dropping releases references.
	if err := x.Create("ab", VolumeInfo{Params: testParams, Size: uint64(len(a))}, la); err != nil {
		t.Fatal(err)
	}
	checkRefcounts(t, db, wantRefcounts(la, la))
	if err := x.Drop("ab"); err != nil {
		t.Fatal(err)
	}
	checkRefcounts(t, db, wantRefcounts(la))
	if _, _, err := x.Load("ab"); !errors.Is(err, ErrNoVolume) {
		t.Fatalf("load dropped volume: %v", err)
	}
}

func TestChunkIndexStaleDiff(t *testing.T) {
	db := openMem(t, vfs.NewMem())
	defer db.Close()
	x := NewChunkIndex(db)
	rng := rand.New(rand.NewPCG(2, 2))
	data := randomVolume(2, 200000)
	list := chunkAll(t, data)
	if err := x.Create("v", VolumeInfo{Params: testParams, Size: uint64(len(data))}, list); err != nil {
		t.Fatal(err)
	}
	_, _, d := rehash(t, rng, data, list)
	if err := x.Apply("v", d, [32]byte{1}); err != nil {
		t.Fatal(err)
	}
	// Applying the same diff again must fail and write nothing.
	_, before, _ := x.Load("v")
	err := x.Apply("v", d, [32]byte{2})
	if !errors.Is(err, ErrStaleDiff) || !strings.Contains(err.Error(), `"v"`) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("err = %v", err)
	}
	info, after, err := x.Load("v")
	if err != nil || !slices.Equal(before, after) || info.Root != ([32]byte{1}) {
		t.Fatalf("stale diff changed the index: %v", err)
	}
	if err := x.Apply("nope", d, [32]byte{}); !errors.Is(err, ErrNoVolume) {
		t.Fatalf("apply to unknown volume: %v", err)
	}
}

func TestChunkIndexCorrupt(t *testing.T) {
	data := randomVolume(3, 100000)
	list := chunkAll(t, data)
	for _, tc := range []struct {
		name    string
		corrupt func(db *pebbledb.DB) error
		want    string
	}{
		{"short-value", func(db *pebbledb.DB) error {
			return db.Set(chunkKey("vol", list[2].Offset), []byte{1, 2, 3}, pebbledb.Sync)
		}, fmt.Sprintf(`volume "vol": chunk at offset %d`, list[2].Offset)},
		{"zero-length", func(db *pebbledb.DB) error {
			c := list[3]
			c.Length = 0
			return db.Set(chunkKey("vol", c.Offset), encodeChunk(c), pebbledb.Sync)
		}, fmt.Sprintf("offset %d", list[3].Offset)},
		{"gap", func(db *pebbledb.DB) error {
			return db.Delete(chunkKey("vol", list[4].Offset), pebbledb.Sync)
		}, fmt.Sprintf("expected one at offset %d", list[4].Offset)},
		{"bad-key", func(db *pebbledb.DB) error {
			return db.Set(append(chunkKey("vol", list[1].Offset), 0), encodeChunk(list[1]), pebbledb.Sync)
		}, fmt.Sprintf("after offset %d", list[1].Offset)},
		{"record", func(db *pebbledb.DB) error {
			return db.Set(volumeKey("vol"), []byte{9}, pebbledb.Sync)
		}, `volume "vol": record`},
		{"count", func(db *pebbledb.DB) error {
			return db.Set(volumeKey("vol"), encodeVolume(VolumeInfo{Params: testParams, Size: 100000, Chunks: 1}), pebbledb.Sync)
		}, "record says 1 chunks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openMem(t, vfs.NewMem())
			defer db.Close()
			x := NewChunkIndex(db)
			if err := x.Create("vol", VolumeInfo{Params: testParams, Size: uint64(len(data))}, list); err != nil {
				t.Fatal(err)
			}
			if err := tc.corrupt(db); err != nil {
				t.Fatal(err)
			}
			_, _, err := x.Load("vol")
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrCorrupt mentioning %q", err, tc.want)
			}
		})
	}
}

func TestChunkIndexKeysDoNotCollide(t *testing.T) {
	db := openMem(t, vfs.NewMem())
	defer db.Close()
	x := NewChunkIndex(db)
	data := randomVolume(4, 50000)
	list := chunkAll(t, data)
	for _, name := range []string{"a", "a\x00", "ab", "b"} {
		if err := x.Create(name, VolumeInfo{Params: testParams, Size: uint64(len(data))}, list); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"a", "a\x00", "ab", "b"} {
		if _, got, err := x.Load(name); err != nil || !slices.Equal(got, list) {
			t.Fatalf("volume %q: %v", name, err)
		}
	}
	if err := x.Create("", VolumeInfo{}, nil); err == nil {
		t.Fatal("empty volume name accepted")
	}
}

// TestChunkIndexCrash applies a sequence of rehash diffs while taking crash
// clones of the file system at random moments (keeping a random share of
// unsynced writes). Every clone must open to one of the states the sequence
// went through, with refcounts matching it: never a mix. States whose Apply
// had returned before the clone was taken must not be lost.
func TestChunkIndexCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db := openMem(t, fs)
	x := NewChunkIndex(db)
	rng := rand.New(rand.NewPCG(5, 5))
	data := randomVolume(5, 400000)
	list := chunkAll(t, data)
	states := [][]IndexChunk{list}
	var diffs []IndexDiff
	for range 30 {
		var d IndexDiff
		data, list, d = rehash(t, rng, data, list)
		states = append(states, list)
		diffs = append(diffs, d)
	}
	if err := x.Create("v", VolumeInfo{Params: testParams, Size: uint64(len(data))}, states[0]); err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex
		applied int // diffs whose Apply returned
	)
	done := make(chan error, 1)
	go func() {
		for i, d := range diffs {
			if err := x.Apply("v", d, [32]byte{byte(i + 1)}); err != nil {
				done <- err
				return
			}
			mu.Lock()
			applied = i + 1
			mu.Unlock()
		}
		done <- nil
	}()
	type clone struct {
		fs      *vfs.MemFS
		atLeast int
	}
	var clones []clone
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		mu.Lock()
		atLeast := applied
		mu.Unlock()
		c := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(rng.Uint64(), 0))})
		clones = append(clones, clone{c, atLeast})
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for ci, c := range clones {
		cdb := openMem(t, c.fs)
		info, got, err := NewChunkIndex(cdb).Load("v")
		if err != nil {
			t.Fatalf("clone %d: %v", ci, err)
		}
		k := int(info.Root[0])
		if k < c.atLeast || k >= len(states) || !slices.Equal(got, states[k]) {
			t.Fatalf("clone %d: root says state %d (at least %d expected), list matches it: %v", ci, k, c.atLeast, k < len(states) && slices.Equal(got, states[k]))
		}
		checkRefcounts(t, cdb, wantRefcounts(states[k]))
		seen[k] = true
		if err := cdb.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d crash clones, %d distinct states seen", len(clones), len(seen))
}

// FuzzChunkIndexCodec checks that values round-trip and that decoding any
// bytes never panics.
func FuzzChunkIndexCodec(f *testing.F) {
	f.Add(uint64(0), uint64(1), []byte{1, 2}, uint64(7), encodeVolume(VolumeInfo{Params: testParams, Size: 9, Chunks: 2}))
	f.Fuzz(func(t *testing.T, off, length uint64, id []byte, fp uint64, raw []byte) {
		c := IndexChunk{Offset: off, Length: length, Fp: fp}
		copy(c.ID[:], id)
		got, err := decodeChunk(off, encodeChunk(c))
		valid := length > 0 && length <= MaxIndexChunk
		if valid && (err != nil || got != c) {
			t.Fatalf("chunk %+v round-trips to %+v, %v", c, got, err)
		}
		if !valid && err == nil {
			t.Fatalf("chunk of length %d accepted", length)
		}
		_, _ = decodeChunk(off, raw)
		if info, err := decodeVolume(raw); err == nil && !bytes.Equal(encodeVolume(info), raw) {
			t.Fatalf("volume record %x re-encodes to %x", raw, encodeVolume(info))
		}
		k := chunkKey(string(id), off)
		if keyOffset(k, 3+len(id)) != off {
			t.Fatalf("key %x does not decode to offset %d", k, off)
		}
	})
}

func TestChunkIndexRange(t *testing.T) {
	db := openMem(t, vfs.NewMem())
	defer db.Close()
	x := NewChunkIndex(db)
	data := randomVolume(6, 300000)
	list := chunkAll(t, data)
	if err := x.Create("v", VolumeInfo{Params: testParams, Size: uint64(len(data))}, list); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	for range 300 {
		r := IndexRange{Off: rng.Uint64N(310000), Len: rng.Uint64N(20000)}
		got, err := x.Range("v", r)
		if err != nil {
			t.Fatal(err)
		}
		if want := toIndex(blockhash.ChunksIn(fromIndex(list), blockhash.Range(r))); !slices.Equal(got, want) {
			t.Fatalf("Range(%v): %d chunks, want %d", r, len(got), len(want))
		}
	}
	// A missing entry inside the range is reported with its offset.
	if err := db.Delete(chunkKey("v", list[5].Offset), pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	_, err := x.Range("v", IndexRange{Off: list[4].Offset, Len: list[4].Length + list[5].Length + 1})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", list[5].Offset)) {
		t.Fatalf("err = %v", err)
	}
	_, err = x.Range("v", IndexRange{Off: list[5].Offset + 1, Len: 1})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
}

func TestChunkIndexRefusesBadParams(t *testing.T) {
	db := openMem(t, vfs.NewMem())
	defer db.Close()
	x := NewChunkIndex(db)
	for _, p := range []IndexParams{{}, {Version: 7}, {Version: 1, Min: 4096, Avg: 1024, Max: 8192}, {Version: 1, Min: 1, Avg: 1, Max: MaxIndexChunk + 1}} {
		if err := x.Create("w", VolumeInfo{Params: p}, nil); !errors.Is(err, ErrBadParams) {
			t.Errorf("params %+v: %v, want ErrBadParams", p, err)
		}
	}
}
