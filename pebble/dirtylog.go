package pebble

// Dirty log keys (package logd), prefixes 0x10..0x1f. <uuid> is encoded as
// one length byte followed by the UUID bytes (at most 128), so a volume's
// keys sort together within each table. Integers are big-endian.
//
//	0x10 <uuid>              volume record: u8 version (1), u64 region size
//	                         in sectors, u64 region count, u64 device sectors,
//	                         u64 last generation handed out, then the table
//	                         arguments as text (rest of the value)
//	0x11 <uuid> u64 chunk    in-sync bitmap chunk: 64 u64 words (512 bytes),
//	                         bit i of word j = region chunk*4096 + 64*j + i;
//	                         absent = all regions of the chunk out of sync
//	0x12 <uuid> u64 chunk    marked (MARKed, not yet CLEARed) bitmap chunk,
//	                         same layout; absent = none marked
//	0x13 <uuid> u64 region   pending region: value u64 generation; absent =
//	                         not pending (replicated or never written)
//
// Which keys change together: a MARK writes 0x12 (chunk), 0x13 (region) and
// 0x10 (generation counter); everything since the previous kernel FLUSH is
// committed in one batch, synced before the FLUSH is answered. A CLEAR
// writes 0x12 only. Replicated deletes one 0x13 key in a synced batch.
// CTR writes 0x10 and, for a new log or "sync", every 0x11 chunk.

import (
	"encoding/binary"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

// Dirty log key prefixes.
const (
	prefixVolume  byte = 0x10
	prefixInSync  byte = 0x11
	prefixMarked  byte = 0x12
	prefixPending byte = 0x13
	prefixDLEnd   byte = 0x20 // first prefix after the dirty log range
)

// BitmapKind selects one of the persisted region bitmaps.
type BitmapKind byte

// Bitmaps of the dirty log.
const (
	BitmapInSync BitmapKind = BitmapKind(prefixInSync)
	BitmapMarked BitmapKind = BitmapKind(prefixMarked)
)

// ChunkWords is the number of u64 words in a bitmap chunk.
const ChunkWords = 64

const maxUUIDLen = 128

// VolumeRecord is the 0x10 value.
type VolumeRecord struct {
	RegionSectors uint64
	Regions       uint64
	Sectors       uint64
	NextGen       uint64
	Table         string
}

const volumeRecordVersion = 1

func appendUUIDKey(dst []byte, prefix byte, uuid string) ([]byte, error) {
	if len(uuid) == 0 || len(uuid) > maxUUIDLen {
		return dst, fmt.Errorf("dirty log key: uuid %q must be 1 to %d bytes", uuid, maxUUIDLen)
	}
	dst = append(dst, prefix, byte(len(uuid)))
	return append(dst, uuid...), nil
}

// dirtyLogKey is a decoded dirty log key.
type dirtyLogKey struct {
	prefix byte
	uuid   string
	n      uint64 // chunk or region; 0 for 0x10
}

func (k dirtyLogKey) append(dst []byte) ([]byte, error) {
	dst, err := appendUUIDKey(dst, k.prefix, k.uuid)
	if err != nil || k.prefix == prefixVolume {
		return dst, err
	}
	return binary.BigEndian.AppendUint64(dst, k.n), nil
}

func decodeDirtyLogKey(b []byte) (dirtyLogKey, error) {
	var k dirtyLogKey
	if len(b) < 2 {
		return k, fmt.Errorf("%w: key %x too short", ErrCorrupt, b)
	}
	k.prefix = b[0]
	n := int(b[1])
	if n == 0 || n > maxUUIDLen || len(b) < 2+n {
		return k, fmt.Errorf("%w: key %x has a bad uuid length", ErrCorrupt, b)
	}
	k.uuid = string(b[2 : 2+n])
	rest := b[2+n:]
	switch k.prefix {
	case prefixVolume:
		if len(rest) != 0 {
			return k, fmt.Errorf("%w: volume key %x has trailing bytes", ErrCorrupt, b)
		}
	case prefixInSync, prefixMarked, prefixPending:
		if len(rest) != 8 {
			return k, fmt.Errorf("%w: key %x: want a u64 after the uuid", ErrCorrupt, b)
		}
		k.n = binary.BigEndian.Uint64(rest)
	default:
		return k, fmt.Errorf("%w: key %x has unknown prefix", ErrCorrupt, b)
	}
	return k, nil
}

func (r *VolumeRecord) append(dst []byte) []byte {
	dst = append(dst, volumeRecordVersion)
	for _, v := range []uint64{r.RegionSectors, r.Regions, r.Sectors, r.NextGen} {
		dst = binary.BigEndian.AppendUint64(dst, v)
	}
	return append(dst, r.Table...)
}

func decodeVolumeRecord(b []byte) (VolumeRecord, error) {
	var r VolumeRecord
	if len(b) < 33 || b[0] != volumeRecordVersion {
		return r, fmt.Errorf("%w: volume record %x", ErrCorrupt, b)
	}
	be := binary.BigEndian
	r.RegionSectors, r.Regions, r.Sectors, r.NextGen = be.Uint64(b[1:]), be.Uint64(b[9:]), be.Uint64(b[17:]), be.Uint64(b[25:])
	r.Table = string(b[33:])
	return r, nil
}

// DirtyLogBatch collects dirty log changes for one atomic commit.
type DirtyLogBatch struct {
	db  *DB
	b   *pebbledb.Batch
	key []byte
	val []byte
}

// NewDirtyLogBatch starts a batch.
func (d *DB) NewDirtyLogBatch() *DirtyLogBatch {
	return &DirtyLogBatch{db: d, b: d.db.NewBatch()}
}

// PutVolume writes a volume record.
func (b *DirtyLogBatch) PutVolume(uuid string, r VolumeRecord) error {
	k, err := appendUUIDKey(b.key[:0], prefixVolume, uuid)
	if err != nil {
		return err
	}
	b.key, b.val = k, r.append(b.val[:0])
	return b.b.Set(b.key, b.val, nil)
}

// PutChunk writes a bitmap chunk (at most ChunkWords words); an all-zero
// chunk is deleted.
func (b *DirtyLogBatch) PutChunk(kind BitmapKind, uuid string, chunk uint64, words []uint64) error {
	if kind != BitmapInSync && kind != BitmapMarked {
		return fmt.Errorf("dirty log: unknown bitmap kind %#x", byte(kind))
	}
	if len(words) > ChunkWords {
		return fmt.Errorf("dirty log: chunk of %d words exceeds %d", len(words), ChunkWords)
	}
	k, err := dirtyLogKey{prefix: byte(kind), uuid: uuid, n: chunk}.append(b.key[:0])
	if err != nil {
		return err
	}
	b.key = k
	zero := true
	b.val = b.val[:0]
	for _, w := range words {
		zero = zero && w == 0
		b.val = binary.BigEndian.AppendUint64(b.val, w)
	}
	if zero {
		return b.b.Delete(b.key, nil)
	}
	return b.b.Set(b.key, b.val, nil)
}

// PutPending records region as pending with gen; gen 0 deletes it.
func (b *DirtyLogBatch) PutPending(uuid string, region, gen uint64) error {
	k, err := dirtyLogKey{prefix: prefixPending, uuid: uuid, n: region}.append(b.key[:0])
	if err != nil {
		return err
	}
	b.key = k
	if gen == 0 {
		return b.b.Delete(b.key, nil)
	}
	b.val = binary.BigEndian.AppendUint64(b.val[:0], gen)
	return b.b.Set(b.key, b.val, nil)
}

// Empty reports whether the batch holds no changes.
func (b *DirtyLogBatch) Empty() bool { return b.b.Empty() }

// Commit applies the batch. With sync, it returns only after the WAL is
// synced, including everything committed earlier without sync; an empty
// synced batch still syncs (group commit of earlier unsynced batches).
// The batch is closed afterwards.
func (b *DirtyLogBatch) Commit(sync bool) error {
	defer b.Close()
	wo := b.db.writeOpts(sync)
	if b.b.Empty() {
		if !sync {
			return nil
		}
		if err := b.db.db.LogData(nil, wo); err != nil {
			return fmt.Errorf("sync dirty log: %w", err)
		}
		return nil
	}
	if err := b.b.Commit(wo); err != nil {
		return fmt.Errorf("commit dirty log batch: %w", err)
	}
	return nil
}

// Close releases an uncommitted batch; it is safe to call twice.
func (b *DirtyLogBatch) Close() {
	if b.b != nil {
		_ = b.b.Close()
		b.b = nil
	}
}

// DirtyLogVolume is one volume's stored dirty log state.
type DirtyLogVolume struct {
	UUID    string
	Record  VolumeRecord
	InSync  map[uint64][]uint64
	Marked  map[uint64][]uint64
	Pending map[uint64]uint64
}

// LoadDirtyLog reads every volume's dirty log state, in UUID order. Chunks
// or pending entries without a volume record are reported as corruption.
func (d *DB) LoadDirtyLog() ([]DirtyLogVolume, error) {
	it, err := d.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{prefixVolume}, UpperBound: []byte{prefixDLEnd}})
	if err != nil {
		return nil, fmt.Errorf("load dirty log: %w", err)
	}
	defer it.Close()
	var out []DirtyLogVolume
	idx := map[string]int{}
	for valid := it.First(); valid; valid = it.Next() {
		k, err := decodeDirtyLogKey(it.Key())
		if err != nil {
			return nil, err
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("load dirty log: %w", err)
		}
		if k.prefix == prefixVolume {
			r, err := decodeVolumeRecord(val)
			if err != nil {
				return nil, fmt.Errorf("volume %q: %w", k.uuid, err)
			}
			idx[k.uuid] = len(out)
			out = append(out, DirtyLogVolume{UUID: k.uuid, Record: r, InSync: map[uint64][]uint64{},
				Marked: map[uint64][]uint64{}, Pending: map[uint64]uint64{}})
			continue
		}
		i, ok := idx[k.uuid]
		if !ok {
			return nil, fmt.Errorf("%w: key %x of volume %q without a volume record", ErrCorrupt, it.Key(), k.uuid)
		}
		v := &out[i]
		switch k.prefix {
		case prefixInSync, prefixMarked:
			if len(val)%8 != 0 || len(val) > 8*ChunkWords {
				return nil, fmt.Errorf("%w: bitmap chunk %x of %d bytes", ErrCorrupt, it.Key(), len(val))
			}
			w := make([]uint64, len(val)/8)
			for j := range w {
				w[j] = binary.BigEndian.Uint64(val[8*j:])
			}
			if k.prefix == prefixInSync {
				v.InSync[k.n] = w
			} else {
				v.Marked[k.n] = w
			}
		case prefixPending:
			if len(val) != 8 {
				return nil, fmt.Errorf("%w: pending value %x", ErrCorrupt, val)
			}
			v.Pending[k.n] = binary.BigEndian.Uint64(val)
		}
	}
	return out, it.Error()
}
