package pebble

// Chunk index: each volume's content-defined chunk list (computed by package blockhash)
// and the reference counts of a content-addressed chunk store.
//
// # Keys (prefix 0x20..0x2f)
//
// Integers are big-endian. A volume name is encoded as vol = u16 length +
// bytes (1..MaxVolumeName bytes), so no volume's keys are a prefix of
// another's.
//
//	0x20 vol              volume record: u8 record version (1), u32 chunking
//	                      format version, u32 min, u32 avg, u32 max, u64 size,
//	                      u64 chunk count, [32] Merkle root (zero if unset)
//	0x21 vol u64 offset   chunk: u64 length, [32] BLAKE3-256 id, u64 XXH64
//	0x22 [32] id          refcount: u64, the number of chunk keys (over all
//	                      volumes) with this id; absent when zero
//
// # What changes together
//
// Every method that writes commits exactly one synced batch, so a crash
// leaves the index before or after the call, never a mix: Create writes the
// volume record, all its chunk keys and the refcount changes; Apply deletes
// the removed chunk keys, writes the added ones, adjusts refcounts and the
// record's chunk count and root; Drop deletes the record, the chunk keys and
// adjusts refcounts.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

// Key prefixes of the chunk index.
const (
	prefixChunkVolume byte = 0x20
	prefixChunk       byte = 0x21
	prefixRefcount    byte = 0x22
)

// MaxVolumeName is the longest volume name the chunk index accepts.
const MaxVolumeName = 1024

const (
	chunkVolumeRecordVersion = 1
	chunkVolumeRecordLen     = 1 + 4*4 + 8 + 8 + 32
	chunkValueLen            = 8 + 32 + 8
)

// Errors of the chunk index that callers branch on.
var (
	// ErrNoVolume: the volume has no chunk index; build one with Create.
	ErrNoVolume = errors.New("volume has no chunk index")
	// ErrStaleDiff: a diff does not match the stored index (it was
	// computed from another version of the chunk list). Nothing was
	// written; reload the index and rehash again.
	ErrStaleDiff = errors.New("diff does not match the stored chunk index")
)

// VolumeInfo is the volume record of a chunk index.
type VolumeInfo struct {
	// Params are the chunking parameters the index was built with.
	Params IndexParams
	// Size is the volume's size in bytes: the chunks tile [0, Size).
	Size uint64
	// Chunks is the number of chunks.
	Chunks uint64
	// Root is the Merkle root of the chunk list, or zero if not recorded.
	Root [32]byte
}

// ChunkIndex stores volumes' chunk lists and chunk refcounts in a Pebble
// database. Use one ChunkIndex per database: its methods serialize writes,
// because refcount updates read, then write.
type ChunkIndex struct {
	db *pebbledb.DB
	mu sync.Mutex
}

// NewChunkIndex returns the chunk index kept in db.
func NewChunkIndex(db *pebbledb.DB) *ChunkIndex { return &ChunkIndex{db: db} }

// Create replaces volume's chunk index with chunks (which must tile
// [0, size)) in one synced batch, adjusting refcounts.
func (x *ChunkIndex) Create(volume string, info VolumeInfo, chunks []IndexChunk) error {
	if err := checkVolumeName(volume); err != nil {
		return err
	}
	if err := info.Params.validate(); err != nil {
		return fmt.Errorf("create chunk index of volume %q: %w", volume, err)
	}
	var off uint64
	for _, c := range chunks {
		if c.Offset != off || c.Length == 0 {
			return fmt.Errorf("create chunk index of volume %q: chunk at offset %d, expected one at %d", volume, c.Offset, off)
		}
		off = c.End()
	}
	if off != info.Size {
		return fmt.Errorf("create chunk index of volume %q: chunks end at offset %d, size is %d", volume, off, info.Size)
	}
	info.Chunks = uint64(len(chunks))
	x.mu.Lock()
	defer x.mu.Unlock()
	b := x.db.NewBatch()
	defer b.Close()
	deltas := map[[32]byte]int64{}
	if err := x.deleteChunks(b, volume, deltas); err != nil {
		return err
	}
	for _, c := range chunks {
		if err := b.Set(chunkKey(volume, c.Offset), encodeChunk(c), nil); err != nil {
			return fmt.Errorf("create chunk index of volume %q: %w", volume, err)
		}
		deltas[c.ID]++
	}
	if err := b.Set(volumeKey(volume), encodeVolume(info), nil); err != nil {
		return fmt.Errorf("create chunk index of volume %q: %w", volume, err)
	}
	if err := x.applyRefcounts(b, deltas); err != nil {
		return fmt.Errorf("create chunk index of volume %q: %w", volume, err)
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("create chunk index of volume %q: commit: %w", volume, err)
	}
	return nil
}

// Apply applies a rehash's diff to volume's index in one synced batch and
// records root as the new Merkle root. Every removed chunk must be stored as
// is and every added chunk's offset must be free after the removals;
// otherwise Apply writes nothing and returns ErrStaleDiff.
func (x *ChunkIndex) Apply(volume string, d IndexDiff, root [32]byte) error {
	if err := checkVolumeName(volume); err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	info, err := x.info(volume)
	if err != nil {
		return err
	}
	b := x.db.NewBatch()
	defer b.Close()
	deltas := map[[32]byte]int64{}
	removed := make(map[uint64]bool, len(d.Removed))
	for _, c := range d.Removed {
		stored, err := x.getChunk(volume, c.Offset)
		if errors.Is(err, pebbledb.ErrNotFound) || (err == nil && stored != c) {
			return fmt.Errorf("%w: volume %q: removed chunk at offset %d is not stored as given", ErrStaleDiff, volume, c.Offset)
		}
		if err != nil {
			return err
		}
		removed[c.Offset] = true
		deltas[c.ID]--
		if err := b.Delete(chunkKey(volume, c.Offset), nil); err != nil {
			return fmt.Errorf("apply diff to volume %q: %w", volume, err)
		}
	}
	for _, c := range d.Added {
		if !removed[c.Offset] {
			if _, err := x.getChunk(volume, c.Offset); err == nil || !errors.Is(err, pebbledb.ErrNotFound) {
				if err != nil {
					return err
				}
				return fmt.Errorf("%w: volume %q: added chunk at offset %d is already stored", ErrStaleDiff, volume, c.Offset)
			}
		}
		deltas[c.ID]++
		if err := b.Set(chunkKey(volume, c.Offset), encodeChunk(c), nil); err != nil {
			return fmt.Errorf("apply diff to volume %q: %w", volume, err)
		}
	}
	info.Chunks = info.Chunks + uint64(len(d.Added)) - uint64(len(d.Removed))
	info.Root = root
	if err := b.Set(volumeKey(volume), encodeVolume(info), nil); err != nil {
		return fmt.Errorf("apply diff to volume %q: %w", volume, err)
	}
	if err := x.applyRefcounts(b, deltas); err != nil {
		return fmt.Errorf("apply diff to volume %q: %w", volume, err)
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("apply diff to volume %q: commit: %w", volume, err)
	}
	return nil
}

// Drop deletes volume's chunk index in one synced batch, adjusting
// refcounts. Dropping a volume without an index is not an error.
func (x *ChunkIndex) Drop(volume string) error {
	if err := checkVolumeName(volume); err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	b := x.db.NewBatch()
	defer b.Close()
	deltas := map[[32]byte]int64{}
	if err := x.deleteChunks(b, volume, deltas); err != nil {
		return err
	}
	if err := x.applyRefcounts(b, deltas); err != nil {
		return fmt.Errorf("drop chunk index of volume %q: %w", volume, err)
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("drop chunk index of volume %q: commit: %w", volume, err)
	}
	return nil
}

// Info returns volume's record.
func (x *ChunkIndex) Info(volume string) (VolumeInfo, error) {
	if err := checkVolumeName(volume); err != nil {
		return VolumeInfo{}, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.info(volume)
}

// Load returns volume's record and chunk list. A malformed entry, a gap or
// overlap, or a list that disagrees with the record returns ErrCorrupt
// naming the volume and offset.
func (x *ChunkIndex) Load(volume string) (VolumeInfo, []IndexChunk, error) {
	if err := checkVolumeName(volume); err != nil {
		return VolumeInfo{}, nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	info, err := x.info(volume)
	if err != nil {
		return VolumeInfo{}, nil, err
	}
	chunks := make([]IndexChunk, 0, info.Chunks)
	err = x.scanChunks(volume, func(c IndexChunk) error {
		if want := lastEnd(chunks); c.Offset != want {
			return fmt.Errorf("%w: volume %q: chunk at offset %d, expected one at offset %d", ErrCorrupt, volume, c.Offset, want)
		}
		chunks = append(chunks, c)
		return nil
	})
	if err != nil {
		return VolumeInfo{}, nil, err
	}
	if end := lastEnd(chunks); end != info.Size || uint64(len(chunks)) != info.Chunks {
		return VolumeInfo{}, nil, fmt.Errorf("%w: volume %q: %d chunks ending at offset %d, record says %d chunks, size %d",
			ErrCorrupt, volume, len(chunks), end, info.Chunks, info.Size)
	}
	return info, chunks, nil
}

// Range returns the stored chunks of volume that overlap r, in offset
// order, without loading the whole list: what a rehash or a sender needs
// around a changed region. Gaps and malformed entries return ErrCorrupt
// naming the volume and offset.
func (x *ChunkIndex) Range(volume string, r IndexRange) ([]IndexChunk, error) {
	if err := checkVolumeName(volume); err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	info, err := x.info(volume)
	if err != nil {
		return nil, err
	}
	if r.Len == 0 || r.Off >= info.Size {
		return nil, nil
	}
	lo := chunkKey(volume, 0)[:3+len(volume)]
	it, err := x.db.NewIter(&pebbledb.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("read chunk index of volume %q: %w", volume, err)
	}
	defer it.Close()
	var out []IndexChunk
	for ok := it.SeekLT(chunkKey(volume, r.Off+1)); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != len(lo)+8 {
			return nil, fmt.Errorf("%w: volume %q: chunk key %x after offset %d has %d bytes, want %d", ErrCorrupt, volume, k, keyOffset(k, len(lo)), len(k), len(lo)+8)
		}
		off := binary.BigEndian.Uint64(k[len(lo):])
		if off >= r.End() {
			break
		}
		c, err := decodeChunk(off, it.Value())
		if err != nil {
			return nil, fmt.Errorf("%w: volume %q: chunk at offset %d: %w", ErrCorrupt, volume, off, err)
		}
		want := r.Off
		if len(out) > 0 {
			want = lastEnd(out)
		}
		if (len(out) == 0 && c.End() <= r.Off) || (len(out) > 0 && c.Offset != want) {
			return nil, fmt.Errorf("%w: volume %q: chunk at offset %d, expected one covering offset %d", ErrCorrupt, volume, c.Offset, want)
		}
		out = append(out, c)
	}
	if len(out) == 0 || lastEnd(out) < min(r.End(), info.Size) {
		return nil, fmt.Errorf("%w: volume %q: no chunk covers offset %d", ErrCorrupt, volume, max(r.Off, lastEnd(out)))
	}
	return out, nil
}

// Refcount returns the number of stored chunks (over all volumes) whose
// identity is id.
func (x *ChunkIndex) Refcount(id [32]byte) (uint64, error) {
	v, closer, err := x.db.Get(refcountKey(id))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("refcount of chunk %x: %w", id, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: refcount of chunk %x has %d bytes", ErrCorrupt, id, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func lastEnd(chunks []IndexChunk) uint64 {
	if len(chunks) == 0 {
		return 0
	}
	return chunks[len(chunks)-1].End()
}

func (x *ChunkIndex) info(volume string) (VolumeInfo, error) {
	v, closer, err := x.db.Get(volumeKey(volume))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return VolumeInfo{}, fmt.Errorf("%w: %q", ErrNoVolume, volume)
	}
	if err != nil {
		return VolumeInfo{}, fmt.Errorf("read chunk index record of volume %q: %w", volume, err)
	}
	defer closer.Close()
	info, err := decodeVolume(v)
	if err != nil {
		return VolumeInfo{}, fmt.Errorf("%w: volume %q: record: %w", ErrCorrupt, volume, err)
	}
	return info, nil
}

func (x *ChunkIndex) getChunk(volume string, off uint64) (IndexChunk, error) {
	v, closer, err := x.db.Get(chunkKey(volume, off))
	if err != nil {
		if errors.Is(err, pebbledb.ErrNotFound) {
			return IndexChunk{}, err
		}
		return IndexChunk{}, fmt.Errorf("read chunk of volume %q at offset %d: %w", volume, off, err)
	}
	defer closer.Close()
	c, err := decodeChunk(off, v)
	if err != nil {
		return IndexChunk{}, fmt.Errorf("%w: volume %q: chunk at offset %d: %w", ErrCorrupt, volume, off, err)
	}
	return c, nil
}

// scanChunks calls fn for each stored chunk of volume in offset order.
func (x *ChunkIndex) scanChunks(volume string, fn func(IndexChunk) error) error {
	lo := chunkKey(volume, 0)[:3+len(volume)]
	it, err := x.db.NewIter(&pebbledb.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return fmt.Errorf("scan chunk index of volume %q: %w", volume, err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != len(lo)+8 {
			it.Close()
			return fmt.Errorf("%w: volume %q: chunk key %x after offset %d has %d bytes, want %d", ErrCorrupt, volume, k, keyOffset(k, len(lo)), len(k), len(lo)+8)
		}
		off := binary.BigEndian.Uint64(k[len(lo):])
		c, err := decodeChunk(off, it.Value())
		if err != nil {
			it.Close()
			return fmt.Errorf("%w: volume %q: chunk at offset %d: %w", ErrCorrupt, volume, off, err)
		}
		if err := fn(c); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("scan chunk index of volume %q: %w", volume, err)
	}
	return nil
}

// keyOffset decodes the offset of a (possibly malformed) chunk key whose
// volume prefix has n bytes, padding a short offset with zeros.
func keyOffset(k []byte, n int) uint64 {
	var b [8]byte
	copy(b[:], k[n:])
	return binary.BigEndian.Uint64(b[:])
}

// deleteChunks adds deletions of volume's record and chunk keys to b and
// their refcount changes to deltas.
func (x *ChunkIndex) deleteChunks(b *pebbledb.Batch, volume string, deltas map[[32]byte]int64) error {
	err := x.scanChunks(volume, func(c IndexChunk) error {
		deltas[c.ID]--
		return b.Delete(chunkKey(volume, c.Offset), nil)
	})
	if err != nil {
		return err
	}
	return b.Delete(volumeKey(volume), nil)
}

// applyRefcounts adds the refcount changes in deltas to b.
func (x *ChunkIndex) applyRefcounts(b *pebbledb.Batch, deltas map[[32]byte]int64) error {
	for id, d := range deltas {
		if d == 0 {
			continue
		}
		cur, err := x.Refcount(id)
		if err != nil {
			return err
		}
		n := int64(cur) + d
		switch {
		case n < 0:
			return fmt.Errorf("%w: refcount of chunk %x would drop below zero (%d%+d)", ErrCorrupt, id, cur, d)
		case n == 0:
			err = b.Delete(refcountKey(id), nil)
		default:
			err = b.Set(refcountKey(id), binary.BigEndian.AppendUint64(nil, uint64(n)), nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func checkVolumeName(volume string) error {
	if len(volume) == 0 || len(volume) > MaxVolumeName {
		return fmt.Errorf("volume name %q: must be 1..%d bytes", volume, MaxVolumeName)
	}
	return nil
}

func volumeKey(volume string) []byte {
	k := []byte{prefixChunkVolume}
	k = binary.BigEndian.AppendUint16(k, uint16(len(volume)))
	return append(k, volume...)
}

func chunkKey(volume string, off uint64) []byte {
	k := make([]byte, 0, 3+len(volume)+8)
	k = append(k, prefixChunk)
	k = binary.BigEndian.AppendUint16(k, uint16(len(volume)))
	k = append(k, volume...)
	return binary.BigEndian.AppendUint64(k, off)
}

func refcountKey(id [32]byte) []byte { return append([]byte{prefixRefcount}, id[:]...) }

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func encodeChunk(c IndexChunk) []byte {
	v := make([]byte, 0, chunkValueLen)
	v = binary.BigEndian.AppendUint64(v, c.Length)
	v = append(v, c.ID[:]...)
	return binary.BigEndian.AppendUint64(v, c.Fp)
}

func decodeChunk(off uint64, v []byte) (IndexChunk, error) {
	if len(v) != chunkValueLen {
		return IndexChunk{}, fmt.Errorf("value has %d bytes, want %d", len(v), chunkValueLen)
	}
	c := IndexChunk{Offset: off, Length: binary.BigEndian.Uint64(v), Fp: binary.BigEndian.Uint64(v[40:])}
	copy(c.ID[:], v[8:40])
	if c.Length == 0 || c.Length > MaxIndexChunk {
		return IndexChunk{}, fmt.Errorf("length %d outside 1..%d", c.Length, MaxIndexChunk)
	}
	return c, nil
}

func encodeVolume(info VolumeInfo) []byte {
	v := make([]byte, 0, chunkVolumeRecordLen)
	v = append(v, chunkVolumeRecordVersion)
	for _, n := range []uint32{info.Params.Version, info.Params.Min, info.Params.Avg, info.Params.Max} {
		v = binary.BigEndian.AppendUint32(v, n)
	}
	v = binary.BigEndian.AppendUint64(v, info.Size)
	v = binary.BigEndian.AppendUint64(v, info.Chunks)
	return append(v, info.Root[:]...)
}

func decodeVolume(v []byte) (VolumeInfo, error) {
	if len(v) != chunkVolumeRecordLen || v[0] != chunkVolumeRecordVersion {
		return VolumeInfo{}, fmt.Errorf("%d bytes of record version %d, want %d bytes of version %d", len(v), firstByte(v), chunkVolumeRecordLen, chunkVolumeRecordVersion)
	}
	var info VolumeInfo
	u32 := func(i int) uint32 { return binary.BigEndian.Uint32(v[1+4*i:]) }
	info.Params = IndexParams{Version: u32(0), Min: u32(1), Avg: u32(2), Max: u32(3)}
	info.Size = binary.BigEndian.Uint64(v[17:])
	info.Chunks = binary.BigEndian.Uint64(v[25:])
	copy(info.Root[:], v[33:])
	return info, nil
}

func firstByte(v []byte) int {
	if len(v) == 0 {
		return -1
	}
	return int(v[0])
}
