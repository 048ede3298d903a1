package pebble

// Replication state (package rpc), prefixes 0x30..0x3f.
//
// Receiver side (the node that holds a replica), per volume name V
// (encoded as one length byte followed by the name, 1..255 bytes):
//
//	0x30 V                      volume meta: size u64 | min u32 | avg u32 |
//	                            max u32 | chunk algorithm name (rest)
//	0x31 V offset:u64           chunk index by offset: length u32 | id [32]
//	0x32 V id:[32] offset:u64   chunk index by id: empty value
//	0x33 V batch:u64            "applying" marker: n u32, then n × (start u64,
//	                            end u64): byte ranges whose replica bytes are
//	                            being rewritten and are not known good
//
// Sender side (the node that owns the volume), per volume V and peer id P
// (one length byte, then the id):
//
//	0x38 V P                    progress: root [32] | chunks u64 |
//	                            acked-at unix nanos i64 | batches u64 |
//	                            data bytes sent u64 | chunking name (rest)
//
// What changes together, and when it is synced:
//   - MarkApplying writes one 0x33 key, synced, before any byte of a batch is
//     written to the replica image.
//   - CommitApplied, after the image was fsynced, deletes the 0x31/0x32 pairs
//     overlapping the batch's ranges that the batch does not keep as they
//     are, puts the new pairs, deletes the batch's 0x33 key and every older
//     0x33 key its ranges cover, in one synced batch (no batch when nothing
//     changes).
//   - DropApplied (a batch failed, or recovery at open) deletes the 0x31/0x32
//     pairs overlapping a marker's ranges and keeps the marker, synced: the
//     index never claims bytes that a half-applied batch may have changed.
//   - 0x38 is written alone after each acknowledged batch, not synced; it is
//     synced when the volume's chunking is first recorded.
// 0x31 and 0x32 always change together: each 0x31 entry has exactly one
// 0x32 twin.

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

const (
	prefixReplicaMeta     = 0x30
	prefixReplicaChunk    = 0x31
	prefixReplicaByID     = 0x32
	prefixReplicaApplying = 0x33
	prefixSendProgress    = 0x38
)

// ErrBadName is returned for a volume name or peer id that cannot be a key.
var ErrBadName = errors.New("name must be 1..255 bytes")

// ReplicaStore keeps a receiver's replica index and a sender's progress.
type ReplicaStore struct {
	db *pebbledb.DB
}

// NewReplicaStore returns a store over db. The caller owns db.
func NewReplicaStore(db *pebbledb.DB) *ReplicaStore { return &ReplicaStore{db: db} }

// ReplicaMeta is what a receiver remembers about a volume's shape.
type ReplicaMeta struct {
	Size      uint64
	Algorithm string
	Min       uint32
	Avg       uint32
	Max       uint32
}

// ReplicaChunk is one chunk the replica image holds.
type ReplicaChunk struct {
	Offset uint64
	Length uint32
	ID     [32]byte
}

// End returns the offset just past the chunk.
func (c ReplicaChunk) End() uint64 { return c.Offset + uint64(c.Length) }

// ByteRange is the byte range [Start, End).
type ByteRange struct{ Start, End uint64 }

// Marker is a durable "applying" marker.
type Marker struct {
	Batch  uint64
	Ranges []ByteRange
}

// SendProgress is a sender's record of a peer's last acknowledgement.
type SendProgress struct {
	Root      [32]byte
	Chunks    uint64
	AckedAt   int64
	Batches   uint64
	BytesSent uint64
	// Chunking names the chunking the volume is sent with to this peer
	// (empty: none recorded yet); the peer's replica is made with it.
	Chunking string
}

func appendName(k []byte, name string) ([]byte, error) {
	if len(name) == 0 || len(name) > 255 {
		return nil, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	k = append(k, byte(len(name)))
	return append(k, name...), nil
}

func volPrefix(prefix byte, vol string) ([]byte, error) {
	return appendName([]byte{prefix}, vol)
}

// upperBound returns the smallest key greater than every key with prefix p.
func upperBound(p []byte) []byte {
	u := bytes.Clone(p)
	for i := len(u) - 1; i >= 0; i-- {
		if u[i] < 0xff {
			u[i]++
			return u[:i+1]
		}
	}
	return nil
}

func replicaChunkKey(vp []byte, off uint64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(vp), off)
}

func byIDKey(vp []byte, id [32]byte, off uint64) []byte {
	k := append(bytes.Clone(vp), id[:]...)
	return binary.BigEndian.AppendUint64(k, off)
}

func decodeReplicaChunk(key, val []byte) (ReplicaChunk, error) {
	if len(key) < 8 || len(val) != 36 {
		return ReplicaChunk{}, fmt.Errorf("replica index: corrupt entry %x", key)
	}
	c := ReplicaChunk{Offset: binary.BigEndian.Uint64(key[len(key)-8:]), Length: binary.BigEndian.Uint32(val)}
	copy(c.ID[:], val[4:])
	return c, nil
}

func encodeReplicaChunk(c ReplicaChunk) []byte {
	v := binary.BigEndian.AppendUint32(make([]byte, 0, 36), c.Length)
	return append(v, c.ID[:]...)
}

// Meta returns the stored meta of a volume, if any.
func (s *ReplicaStore) Meta(vol string) (ReplicaMeta, bool, error) {
	k, err := volPrefix(prefixReplicaMeta, vol)
	if err != nil {
		return ReplicaMeta{}, false, err
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return ReplicaMeta{}, false, nil
	}
	if err != nil {
		return ReplicaMeta{}, false, fmt.Errorf("replica meta %s: %w", vol, err)
	}
	defer closer.Close()
	if len(v) < 20 {
		return ReplicaMeta{}, false, fmt.Errorf("replica meta %s: corrupt value", vol)
	}
	return ReplicaMeta{
		Size: binary.BigEndian.Uint64(v), Min: binary.BigEndian.Uint32(v[8:]),
		Avg: binary.BigEndian.Uint32(v[12:]), Max: binary.BigEndian.Uint32(v[16:]),
		Algorithm: string(v[20:]),
	}, true, nil
}

// SetMeta durably stores a volume's meta.
func (s *ReplicaStore) SetMeta(vol string, m ReplicaMeta) error {
	k, err := volPrefix(prefixReplicaMeta, vol)
	if err != nil {
		return err
	}
	v := binary.BigEndian.AppendUint64(nil, m.Size)
	v = binary.BigEndian.AppendUint32(v, m.Min)
	v = binary.BigEndian.AppendUint32(v, m.Avg)
	v = binary.BigEndian.AppendUint32(v, m.Max)
	v = append(v, m.Algorithm...)
	if err := s.db.Set(k, v, pebbledb.Sync); err != nil {
		return fmt.Errorf("replica meta %s: %w", vol, err)
	}
	return nil
}

// ChunkAt returns the index entry starting exactly at off, if any.
func (s *ReplicaStore) ChunkAt(vol string, off uint64) (ReplicaChunk, bool, error) {
	vp, err := volPrefix(prefixReplicaChunk, vol)
	if err != nil {
		return ReplicaChunk{}, false, err
	}
	k := replicaChunkKey(vp, off)
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return ReplicaChunk{}, false, nil
	}
	if err != nil {
		return ReplicaChunk{}, false, fmt.Errorf("replica index %s: %w", vol, err)
	}
	defer closer.Close()
	c, err := decodeReplicaChunk(k, v)
	return c, err == nil, err
}

// ChunkFinder looks chunks up by id, reusing one iterator across lookups.
type ChunkFinder struct {
	s   *ReplicaStore
	vol string
	vp  []byte
	it  *pebbledb.Iterator
}

// NewChunkFinder returns a finder over vol's committed index. Close it.
func (s *ReplicaStore) NewChunkFinder(vol string) (*ChunkFinder, error) {
	vp, err := volPrefix(prefixReplicaByID, vol)
	if err != nil {
		return nil, err
	}
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: vp, UpperBound: upperBound(vp)})
	if err != nil {
		return nil, fmt.Errorf("replica index %s: %w", vol, err)
	}
	return &ChunkFinder{s: s, vol: vol, vp: vp, it: it}, nil
}

// Find returns an indexed chunk with the given id for which skip returns
// false, if any.
func (f *ChunkFinder) Find(id [32]byte, skip func(ReplicaChunk) bool) (ReplicaChunk, bool, error) {
	idp := append(bytes.Clone(f.vp), id[:]...)
	for ok := f.it.SeekGE(idp); ok && bytes.HasPrefix(f.it.Key(), idp); ok = f.it.Next() {
		off := binary.BigEndian.Uint64(f.it.Key()[len(idp):])
		c, found, err := f.s.ChunkAt(f.vol, off)
		if err != nil {
			return ReplicaChunk{}, false, err
		}
		if !found || c.ID != id {
			return ReplicaChunk{}, false, fmt.Errorf("replica index %s: by-id entry at %d has no twin", f.vol, off)
		}
		if !skip(c) {
			return c, true, nil
		}
	}
	return ReplicaChunk{}, false, f.it.Error()
}

// Close releases the finder's iterator.
func (f *ChunkFinder) Close() error { return f.it.Close() }

// FindChunk returns an indexed chunk with the given id for which skip
// returns false, if any.
func (s *ReplicaStore) FindChunk(vol string, id [32]byte, skip func(ReplicaChunk) bool) (ReplicaChunk, bool, error) {
	f, err := s.NewChunkFinder(vol)
	if err != nil {
		return ReplicaChunk{}, false, err
	}
	defer f.Close()
	return f.Find(id, skip)
}

// ChunksIn calls fn for every indexed chunk of vol that starts in [start,
// end), in ascending offset order.
func (s *ReplicaStore) ChunksIn(vol string, start, end uint64, fn func(ReplicaChunk) error) error {
	return s.ChunksInRanges(vol, []ByteRange{{Start: start, End: end}}, fn)
}

// ChunksInRanges calls fn for every indexed chunk of vol that starts in one
// of ranges, in ascending offset order; one iterator serves them all. The
// ranges are taken in ascending order of their starts.
func (s *ReplicaStore) ChunksInRanges(vol string, ranges []ByteRange, fn func(ReplicaChunk) error) error {
	if len(ranges) == 0 {
		return nil
	}
	vp, err := volPrefix(prefixReplicaChunk, vol)
	if err != nil {
		return err
	}
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: vp, UpperBound: upperBound(vp)})
	if err != nil {
		return fmt.Errorf("replica index %s: %w", vol, err)
	}
	defer it.Close()
	next := uint64(0) // chunks starting below next were passed to fn
	for _, r := range sortedRanges(ranges) {
		from := max(r.Start, next)
		if from >= r.End {
			continue
		}
		for ok := it.SeekGE(replicaChunkKey(vp, from)); ok; ok = it.Next() {
			c, err := decodeReplicaChunk(it.Key(), it.Value())
			if err != nil {
				return err
			}
			if c.Offset >= r.End {
				break
			}
			if err := fn(c); err != nil {
				return err
			}
		}
		if err := it.Error(); err != nil {
			return err
		}
		next = r.End
	}
	return nil
}

// sortedRanges returns rs in ascending order of their starts (rs itself
// when it already is).
func sortedRanges(rs []ByteRange) []ByteRange {
	if slices.IsSortedFunc(rs, func(a, b ByteRange) int { return cmp.Compare(a.Start, b.Start) }) {
		return rs
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b ByteRange) int { return cmp.Compare(a.Start, b.Start) })
	return rs
}

// Chunks calls fn for every indexed chunk of vol in ascending offset order.
func (s *ReplicaStore) Chunks(vol string, fn func(ReplicaChunk) error) error {
	vp, err := volPrefix(prefixReplicaChunk, vol)
	if err != nil {
		return err
	}
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: vp, UpperBound: upperBound(vp)})
	if err != nil {
		return fmt.Errorf("replica index %s: %w", vol, err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		c, err := decodeReplicaChunk(it.Key(), it.Value())
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return it.Error()
}

func encodeRanges(rs []ByteRange) []byte {
	v := binary.BigEndian.AppendUint32(nil, uint32(len(rs)))
	for _, r := range rs {
		v = binary.BigEndian.AppendUint64(v, r.Start)
		v = binary.BigEndian.AppendUint64(v, r.End)
	}
	return v
}

func decodeRanges(v []byte) ([]ByteRange, error) {
	if len(v) < 4 || uint64(len(v)-4) != uint64(binary.BigEndian.Uint32(v))*16 {
		return nil, errors.New("corrupt applying marker")
	}
	n := binary.BigEndian.Uint32(v)
	rs := make([]ByteRange, n)
	for i := range rs {
		rs[i].Start = binary.BigEndian.Uint64(v[4+16*i:])
		rs[i].End = binary.BigEndian.Uint64(v[12+16*i:])
	}
	return rs, nil
}

// MarkApplying durably records that batch is about to rewrite ranges.
func (s *ReplicaStore) MarkApplying(vol string, batch uint64, ranges []ByteRange) error {
	vp, err := volPrefix(prefixReplicaApplying, vol)
	if err != nil {
		return err
	}
	if err := s.db.Set(binary.BigEndian.AppendUint64(vp, batch), encodeRanges(ranges), pebbledb.Sync); err != nil {
		return fmt.Errorf("mark %s batch %d applying: %w", vol, batch, err)
	}
	return nil
}

// Applying lists the volume's applying markers in batch order.
func (s *ReplicaStore) Applying(vol string) ([]Marker, error) { return applying(s.db, vol) }

// indexReader reads the index: the database, or an indexed batch over it
// (which sees its own writes).
type indexReader interface {
	NewIter(*pebbledb.IterOptions) (*pebbledb.Iterator, error)
}

func applying(r indexReader, vol string) ([]Marker, error) {
	vp, err := volPrefix(prefixReplicaApplying, vol)
	if err != nil {
		return nil, err
	}
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: vp, UpperBound: upperBound(vp)})
	if err != nil {
		return nil, fmt.Errorf("applying markers %s: %w", vol, err)
	}
	defer it.Close()
	var ms []Marker
	for it.First(); it.Valid(); it.Next() {
		rs, err := decodeRanges(it.Value())
		if err != nil {
			return nil, fmt.Errorf("applying markers %s: %w", vol, err)
		}
		ms = append(ms, Marker{Batch: binary.BigEndian.Uint64(it.Key()[len(vp):]), Ranges: rs})
	}
	return ms, it.Error()
}

// dropOverlapping adds to b the deletion of every index pair overlapping r.
func (s *ReplicaStore) dropOverlapping(b *pebbledb.Batch, vol string, r ByteRange) error {
	vp, _ := volPrefix(prefixReplicaChunk, vol)
	ip, _ := volPrefix(prefixReplicaByID, vol)
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: vp, UpperBound: upperBound(vp)})
	if err != nil {
		return err
	}
	defer it.Close()
	del := func() error {
		c, err := decodeReplicaChunk(it.Key(), it.Value())
		if err != nil {
			return err
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			return err
		}
		return b.Delete(byIDKey(ip, c.ID, c.Offset), nil)
	}
	// The chunk starting before r may reach into it.
	if it.SeekLT(replicaChunkKey(vp, r.Start)) {
		c, err := decodeReplicaChunk(it.Key(), it.Value())
		if err != nil {
			return err
		}
		if c.End() > r.Start {
			if err := del(); err != nil {
				return err
			}
		}
	}
	for ok := it.SeekGE(replicaChunkKey(vp, r.Start)); ok; ok = it.Next() {
		if binary.BigEndian.Uint64(it.Key()[len(vp):]) >= r.End {
			break
		}
		if err := del(); err != nil {
			return err
		}
	}
	return it.Error()
}

// DropApplied durably removes the index entries overlapping ranges, keeping
// the applying markers: used when a batch failed after writing, and at
// recovery.
func (s *ReplicaStore) DropApplied(vol string, ranges []ByteRange) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, r := range ranges {
		if err := s.dropOverlapping(b, vol, r); err != nil {
			return fmt.Errorf("drop index %s [%d,%d): %w", vol, r.Start, r.End, err)
		}
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("drop index %s: %w", vol, err)
	}
	return nil
}

// subtractRanges returns the parts of m (sorted, non-overlapping) that no
// range of rs (sorted, non-overlapping) covers.
func subtractRanges(m []ByteRange, rs []ByteRange) []ByteRange {
	var out []ByteRange
	for _, x := range m {
		pos := x.Start
		for _, r := range rs {
			if r.End <= pos || r.Start >= x.End {
				continue
			}
			if r.Start > pos {
				out = append(out, ByteRange{pos, r.Start})
			}
			pos = max(pos, r.End)
			if pos >= x.End {
				break
			}
		}
		if pos < x.End {
			out = append(out, ByteRange{pos, x.End})
		}
	}
	return out
}

// covered reports whether every range of m lies inside the union of rs
// (sorted, non-overlapping).
func covered(m []ByteRange, rs []ByteRange) bool { return len(subtractRanges(m, rs)) == 0 }

// CommitApplied durably replaces the index entries overlapping ranges with
// chunks and clears batch's marker, and every older marker whose ranges are
// all covered, in one synced batch. Call it only after the image is synced.
// Entries that stay as they are are not rewritten: a batch costs index
// writes for what changed, not for its ranges. With nothing to change it
// writes nothing.
func (s *ReplicaStore) CommitApplied(vol string, batch uint64, ranges []ByteRange, chunks []ReplicaChunk) error {
	return s.CommitAppliedAll(vol, []AppliedBatch{{Batch: batch, Ranges: ranges, Chunks: chunks}})
}

// AppliedBatch is one batch's index change: the entries overlapping Ranges
// become Chunks, and the batch's marker goes.
type AppliedBatch struct {
	Batch  uint64
	Ranges []ByteRange
	Chunks []ReplicaChunk
	// Also are more batches whose markers go (batches merged into this
	// one).
	Also []uint64
}

// CommitAppliedAll is CommitApplied for several batches, applied in order
// (a later one wins where their ranges overlap), in one synced write: a
// consistency point's batches cost one sync, not one each.
func (s *ReplicaStore) CommitAppliedAll(vol string, batches []AppliedBatch) error {
	if len(batches) == 0 {
		return nil
	}
	b, err := s.appliedBatch(vol, batches)
	if err != nil {
		return err
	}
	defer b.Close()
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("commit %s batch %d: %w", vol, batches[0].Batch, err)
	}
	return nil
}

// appliedBatch builds the index change of batches (CommitAppliedAll) as one
// Pebble batch, not yet committed. The caller closes it.
func (s *ReplicaStore) appliedBatch(vol string, batches []AppliedBatch) (*pebbledb.Batch, error) {
	if merged, ok := mergeDisjoint(batches); ok {
		// Batches on disjoint ranges change the index as one batch does:
		// no batch need read what another wrote.
		batches = merged
	}
	var b *pebbledb.Batch
	var r indexReader = s.db
	if len(batches) > 1 {
		// Later batches must see what earlier ones changed.
		b = s.db.NewIndexedBatch()
		r = b
	} else {
		b = s.db.NewBatch()
	}
	for _, ab := range batches {
		if err := s.applyInto(b, r, vol, ab); err != nil {
			b.Close()
			return nil, fmt.Errorf("commit %s batch %d: %w", vol, ab.Batch, err)
		}
	}
	return b, nil
}

// mergeDisjoint returns batches as one, if no two of them have ranges that
// overlap: its ranges and chunks are theirs in offset order, and it clears
// every batch's marker.
func mergeDisjoint(batches []AppliedBatch) ([]AppliedBatch, bool) {
	if len(batches) < 2 {
		return batches, false
	}
	var m AppliedBatch
	for _, ab := range batches {
		m.Ranges = append(m.Ranges, ab.Ranges...)
		m.Chunks = append(m.Chunks, ab.Chunks...)
		m.Also = append(m.Also, ab.Batch)
		m.Also = append(m.Also, ab.Also...)
	}
	m.Ranges = sortedRanges(m.Ranges)
	for i := 1; i < len(m.Ranges); i++ {
		if m.Ranges[i].Start < m.Ranges[i-1].End {
			return batches, false
		}
	}
	slices.SortFunc(m.Chunks, func(a, b ReplicaChunk) int { return cmp.Compare(a.Offset, b.Offset) })
	m.Batch, m.Also = m.Also[0], m.Also[1:]
	return []AppliedBatch{m}, true
}

// applyInto adds to b the index change of one batch, reading the index as
// it is through r.
func (s *ReplicaStore) applyInto(b *pebbledb.Batch, r indexReader, vol string, ab AppliedBatch) error {
	batch, ranges, chunks := ab.Batch, ab.Ranges, ab.Chunks
	vp, err := volPrefix(prefixReplicaChunk, vol)
	if err != nil {
		return err
	}
	ip, _ := volPrefix(prefixReplicaByID, vol)
	ap, _ := volPrefix(prefixReplicaApplying, vol)
	markers, err := applying(r, vol)
	if err != nil {
		return err
	}
	old := map[uint64]ReplicaChunk{}
	if err := overlapping(r, vol, sortedRanges(ranges), func(c ReplicaChunk) { old[c.Offset] = c }); err != nil {
		return err
	}
	for _, c := range chunks {
		o, had := old[c.Offset]
		if had && o == c {
			delete(old, c.Offset)
			continue
		}
		if had {
			delete(old, c.Offset)
			if err := b.Delete(byIDKey(ip, o.ID, o.Offset), nil); err != nil {
				return err
			}
		}
		if err := b.Set(replicaChunkKey(vp, c.Offset), encodeReplicaChunk(c), nil); err != nil {
			return err
		}
		if err := b.Set(byIDKey(ip, c.ID, c.Offset), nil, nil); err != nil {
			return err
		}
	}
	for _, o := range old { // entries no new chunk starts at
		if err := b.Delete(replicaChunkKey(vp, o.Offset), nil); err != nil {
			return err
		}
		if err := b.Delete(byIDKey(ip, o.ID, o.Offset), nil); err != nil {
			return err
		}
	}
	// An older marker (a batch that failed or was cut off after writing)
	// shrinks by what this batch rewrote: once other batches rewrote all of
	// its ranges, in one batch or in many, it is gone.
	for _, m := range markers {
		key := binary.BigEndian.AppendUint64(bytes.Clone(ap), m.Batch)
		rest := subtractRanges(m.Ranges, ranges)
		switch {
		case m.Batch == batch || slices.Contains(ab.Also, m.Batch) || len(rest) == 0:
			if err := b.Delete(key, nil); err != nil {
				return err
			}
		case !slices.Equal(rest, m.Ranges):
			if err := b.Set(key, encodeRanges(rest), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// overlapping calls fn for every index entry r holds overlapping one of ranges
// (ascending, non-overlapping), in offset order, each entry once; one
// iterator serves them all.
func overlapping(r indexReader, vol string, ranges []ByteRange, fn func(ReplicaChunk)) error {
	if len(ranges) == 0 {
		return nil
	}
	vp, _ := volPrefix(prefixReplicaChunk, vol)
	it, err := r.NewIter(&pebbledb.IterOptions{LowerBound: vp, UpperBound: upperBound(vp)})
	if err != nil {
		return err
	}
	defer it.Close()
	next := uint64(0) // entries below next were passed to fn
	for _, x := range ranges {
		// The chunk starting before x may reach into it.
		if x.Start > next && it.SeekLT(replicaChunkKey(vp, x.Start)) {
			c, err := decodeReplicaChunk(it.Key(), it.Value())
			if err != nil {
				return err
			}
			if c.Offset >= next && c.End() > x.Start {
				fn(c)
				next = c.Offset + 1
			}
		}
		for ok := it.SeekGE(replicaChunkKey(vp, max(x.Start, next))); ok; ok = it.Next() {
			c, err := decodeReplicaChunk(it.Key(), it.Value())
			if err != nil {
				return err
			}
			if c.Offset >= x.End {
				break
			}
			fn(c)
			next = c.Offset + 1
		}
		if err := it.Error(); err != nil {
			return err
		}
	}
	return nil
}

func progressKey(vol, peer string) ([]byte, error) {
	k, err := volPrefix(prefixSendProgress, vol)
	if err != nil {
		return nil, err
	}
	return appendName(k, peer)
}

// Progress returns the sender's record for (vol, peer), if any.
func (s *ReplicaStore) Progress(vol, peer string) (SendProgress, bool, error) {
	k, err := progressKey(vol, peer)
	if err != nil {
		return SendProgress{}, false, err
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return SendProgress{}, false, nil
	}
	if err != nil {
		return SendProgress{}, false, fmt.Errorf("progress %s to %s: %w", vol, peer, err)
	}
	defer closer.Close()
	if len(v) < 64 {
		return SendProgress{}, false, fmt.Errorf("progress %s to %s: corrupt value", vol, peer)
	}
	var p SendProgress
	copy(p.Root[:], v)
	p.Chunks = binary.BigEndian.Uint64(v[32:])
	p.AckedAt = int64(binary.BigEndian.Uint64(v[40:]))
	p.Batches = binary.BigEndian.Uint64(v[48:])
	p.BytesSent = binary.BigEndian.Uint64(v[56:])
	p.Chunking = string(v[64:])
	return p, true, nil
}

// SetProgress stores the sender's record for (vol, peer). It is not synced:
// the counters are informational, and a crash loses at most the latest
// ones (a batch's durability is the peer's ack and the dirty log's sync).
// Use RecordChunking for the one field that must be durable.
func (s *ReplicaStore) SetProgress(vol, peer string, p SendProgress) error {
	return s.setProgress(vol, peer, p, pebbledb.NoSync)
}

// RecordChunking durably records the chunking vol is sent to peer with.
func (s *ReplicaStore) RecordChunking(vol, peer, chunking string) error {
	p, _, err := s.Progress(vol, peer)
	if err != nil {
		return err
	}
	p.Chunking = chunking
	return s.setProgress(vol, peer, p, pebbledb.Sync)
}

func (s *ReplicaStore) setProgress(vol, peer string, p SendProgress, opts *pebbledb.WriteOptions) error {
	k, err := progressKey(vol, peer)
	if err != nil {
		return err
	}
	v := append(make([]byte, 0, 64), p.Root[:]...)
	v = binary.BigEndian.AppendUint64(v, p.Chunks)
	v = binary.BigEndian.AppendUint64(v, uint64(p.AckedAt))
	v = binary.BigEndian.AppendUint64(v, p.Batches)
	v = binary.BigEndian.AppendUint64(v, p.BytesSent)
	v = append(v, p.Chunking...)
	if err := s.db.Set(k, v, opts); err != nil {
		return fmt.Errorf("progress %s to %s: %w", vol, peer, err)
	}
	return nil
}
