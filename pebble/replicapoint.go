package pebble

// Consistency points on the receiver (package rpc, point.go), per volume V:
//
//	0x34 V                      staging: token u64 | committed u8 |
//	                            taken-at unix nanos i64 | batches u32
//	0x35 V batch:u64            a staged batch: redo file bytes u64 |
//	                            ranges (as in 0x33) | n u32, then n × chunk
//	                            (offset u64 | length u32 | id [32])
//	0x36 V                      recovery point: seq u64 | token u64 |
//	                            taken-at unix nanos i64 | applied-at i64
//
// A point's batches are staged (their bytes in redo files beside the store,
// their index entries in 0x35) and touch neither the image nor the index
// until the sender commits the point. What changes together:
//   - BeginStaging writes 0x34 (uncommitted) and deletes every 0x35, synced.
//   - StageBatch writes one 0x35, after its redo file was synced, and counts
//     it in 0x34, in one synced batch.
//   - CommitStaging sets 0x34's committed flag, synced: from here on the
//     point is applied, and applied again after a crash.
//   - FinishPoint deletes 0x34 and every 0x35 and writes 0x36, in one
//     synced batch, after the image was synced and the index committed.
//   - DiscardStaging deletes 0x34 and every 0x35, synced.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

const (
	prefixReplicaStaging = 0x34
	prefixReplicaStaged  = 0x35
	prefixReplicaPoint   = 0x36
)

// Staging is a volume's point being staged.
type Staging struct {
	Token     uint64
	Committed bool
	TakenAt   int64 // unix nanos, set at commit
	Batches   uint32
}

// StagedBatch is one batch of a point: its redo file's length, its ranges
// and the index entries that replace theirs when the point is applied.
type StagedBatch struct {
	Batch     uint64
	RedoBytes uint64
	Ranges    []ByteRange
	Chunks    []ReplicaChunk
}

// RecoveryPoint is the last point applied to a replica: the image holds
// exactly the source as it was at TakenAt.
type RecoveryPoint struct {
	Seq       uint64
	Token     uint64
	TakenAt   int64 // unix nanos, the source's clock
	AppliedAt int64 // unix nanos, the receiver's clock
}

func encodeStaging(st Staging) []byte {
	v := binary.BigEndian.AppendUint64(nil, st.Token)
	c := byte(0)
	if st.Committed {
		c = 1
	}
	v = append(v, c)
	v = binary.BigEndian.AppendUint64(v, uint64(st.TakenAt))
	return binary.BigEndian.AppendUint32(v, st.Batches)
}

// Staging returns the volume's point being staged, if any.
func (s *ReplicaStore) Staging(vol string) (Staging, bool, error) {
	k, err := volPrefix(prefixReplicaStaging, vol)
	if err != nil {
		return Staging{}, false, err
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return Staging{}, false, nil
	}
	if err != nil {
		return Staging{}, false, fmt.Errorf("staging %s: %w", vol, err)
	}
	defer closer.Close()
	if len(v) != 21 {
		return Staging{}, false, fmt.Errorf("staging %s: corrupt value", vol)
	}
	return Staging{Token: binary.BigEndian.Uint64(v), Committed: v[8] == 1,
		TakenAt: int64(binary.BigEndian.Uint64(v[9:])), Batches: binary.BigEndian.Uint32(v[17:])}, true, nil
}

// deleteStaged adds the deletion of vol's staging and staged batches to b.
func deleteStaged(b *pebbledb.Batch, vol string) error {
	sk, err := volPrefix(prefixReplicaStaging, vol)
	if err != nil {
		return err
	}
	bp, _ := volPrefix(prefixReplicaStaged, vol)
	if err := b.Delete(sk, nil); err != nil {
		return err
	}
	return b.DeleteRange(bp, upperBound(bp), nil)
}

// BeginStaging durably starts staging point token for vol, dropping any
// other point's staged batches.
func (s *ReplicaStore) BeginStaging(vol string, token uint64) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := deleteStaged(b, vol); err != nil {
		return err
	}
	sk, _ := volPrefix(prefixReplicaStaging, vol)
	if err := b.Set(sk, encodeStaging(Staging{Token: token}), nil); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("begin staging %s: %w", vol, err)
	}
	return nil
}

// StageBatch durably records one staged batch of point token (whose redo
// file is synced already) and counts it.
func (s *ReplicaStore) StageBatch(vol string, token uint64, sb StagedBatch) error {
	st, ok, err := s.Staging(vol)
	if err != nil {
		return err
	}
	if !ok || st.Token != token || st.Committed {
		return fmt.Errorf("stage batch %d of %s: point %x is not being staged", sb.Batch, vol, token)
	}
	st.Batches++
	bp, _ := volPrefix(prefixReplicaStaged, vol)
	v := binary.BigEndian.AppendUint64(nil, sb.RedoBytes)
	r := encodeRanges(sb.Ranges)
	v = binary.BigEndian.AppendUint32(v, uint32(len(r)))
	v = append(v, r...)
	v = binary.BigEndian.AppendUint32(v, uint32(len(sb.Chunks)))
	for _, c := range sb.Chunks {
		v = binary.BigEndian.AppendUint64(v, c.Offset)
		v = append(v, encodeReplicaChunk(c)...)
	}
	b := s.db.NewBatch()
	defer b.Close()
	sk, _ := volPrefix(prefixReplicaStaging, vol)
	if err := b.Set(binary.BigEndian.AppendUint64(bytes.Clone(bp), sb.Batch), v, nil); err != nil {
		return err
	}
	if err := b.Set(sk, encodeStaging(st), nil); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("stage batch %d of %s: %w", sb.Batch, vol, err)
	}
	return nil
}

// StagedBatches lists the staged batches of vol in batch order.
func (s *ReplicaStore) StagedBatches(vol string) ([]StagedBatch, error) {
	bp, err := volPrefix(prefixReplicaStaged, vol)
	if err != nil {
		return nil, err
	}
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: bp, UpperBound: upperBound(bp)})
	if err != nil {
		return nil, fmt.Errorf("staged batches %s: %w", vol, err)
	}
	defer it.Close()
	var out []StagedBatch
	for it.First(); it.Valid(); it.Next() {
		sb, err := decodeStaged(it.Key()[len(bp):], it.Value())
		if err != nil {
			return nil, fmt.Errorf("staged batches %s: %w", vol, err)
		}
		out = append(out, sb)
	}
	return out, it.Error()
}

func decodeStaged(k, v []byte) (StagedBatch, error) {
	bad := errors.New("corrupt staged batch")
	if len(k) != 8 || len(v) < 12 {
		return StagedBatch{}, bad
	}
	sb := StagedBatch{Batch: binary.BigEndian.Uint64(k), RedoBytes: binary.BigEndian.Uint64(v)}
	rl := int(binary.BigEndian.Uint32(v[8:]))
	v = v[12:]
	if len(v) < rl+4 {
		return StagedBatch{}, bad
	}
	rs, err := decodeRanges(v[:rl])
	if err != nil {
		return StagedBatch{}, err
	}
	sb.Ranges = rs
	v = v[rl:]
	n := int(binary.BigEndian.Uint32(v))
	v = v[4:]
	if len(v) != n*44 {
		return StagedBatch{}, bad
	}
	sb.Chunks = make([]ReplicaChunk, n)
	for i := range sb.Chunks {
		e := v[44*i:]
		sb.Chunks[i] = ReplicaChunk{Offset: binary.BigEndian.Uint64(e), Length: binary.BigEndian.Uint32(e[8:])}
		copy(sb.Chunks[i].ID[:], e[12:44])
	}
	return sb, nil
}

// CommitStaging durably commits point token of vol, taken at takenAt (unix
// nanos): it is applied from here on, again after a crash if need be.
func (s *ReplicaStore) CommitStaging(vol string, token uint64, takenAt int64) error {
	st, ok, err := s.Staging(vol)
	if err != nil {
		return err
	}
	if !ok || st.Token != token {
		return fmt.Errorf("commit point %x of %s: it is not being staged", token, vol)
	}
	st.Committed, st.TakenAt = true, takenAt
	sk, _ := volPrefix(prefixReplicaStaging, vol)
	if err := s.db.Set(sk, encodeStaging(st), pebbledb.Sync); err != nil {
		return fmt.Errorf("commit point %x of %s: %w", token, vol, err)
	}
	return nil
}

// FinishPoint durably records rp as vol's recovery point and drops the
// staging, in one synced batch. Call it only once the image is synced and
// the staged index entries are committed.
func (s *ReplicaStore) FinishPoint(vol string, rp RecoveryPoint) error {
	return s.ApplyPoint(vol, nil, rp)
}

// ApplyPoint is CommitAppliedAll(vol, batches) and FinishPoint(vol, rp) in
// one synced batch: a point's index change and its recovery point become
// durable together, with one sync. Call it only once the image is synced.
func (s *ReplicaStore) ApplyPoint(vol string, batches []AppliedBatch, rp RecoveryPoint) error {
	var b *pebbledb.Batch
	if len(batches) > 0 {
		var err error
		if b, err = s.appliedBatch(vol, batches); err != nil {
			return err
		}
	} else {
		b = s.db.NewBatch()
	}
	defer b.Close()
	if err := deleteStaged(b, vol); err != nil {
		return err
	}
	pk, _ := volPrefix(prefixReplicaPoint, vol)
	v := binary.BigEndian.AppendUint64(nil, rp.Seq)
	v = binary.BigEndian.AppendUint64(v, rp.Token)
	v = binary.BigEndian.AppendUint64(v, uint64(rp.TakenAt))
	v = binary.BigEndian.AppendUint64(v, uint64(rp.AppliedAt))
	if err := b.Set(pk, v, nil); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("finish point %d of %s: %w", rp.Seq, vol, err)
	}
	return nil
}

// DiscardStaging durably drops vol's staging and staged batches.
func (s *ReplicaStore) DiscardStaging(vol string) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := deleteStaged(b, vol); err != nil {
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("discard staging %s: %w", vol, err)
	}
	return nil
}

// Point returns vol's recovery point, if it has one.
func (s *ReplicaStore) Point(vol string) (RecoveryPoint, bool, error) {
	pk, err := volPrefix(prefixReplicaPoint, vol)
	if err != nil {
		return RecoveryPoint{}, false, err
	}
	v, closer, err := s.db.Get(pk)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return RecoveryPoint{}, false, nil
	}
	if err != nil {
		return RecoveryPoint{}, false, fmt.Errorf("recovery point %s: %w", vol, err)
	}
	defer closer.Close()
	if len(v) != 32 {
		return RecoveryPoint{}, false, fmt.Errorf("recovery point %s: corrupt value", vol)
	}
	return RecoveryPoint{Seq: binary.BigEndian.Uint64(v), Token: binary.BigEndian.Uint64(v[8:]),
		TakenAt: int64(binary.BigEndian.Uint64(v[16:])), AppliedAt: int64(binary.BigEndian.Uint64(v[24:]))}, true, nil
}
