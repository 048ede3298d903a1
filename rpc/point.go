package rpc

// Consistency points on the receiver. Once a replica holds a point, its
// image only ever moves from one point of the source to the next:
//
//   - A batch whose offer names a point (Offer.Point) is staged: every byte
//     it would write goes to a redo file of its own in
//     ReceiverConfig.StagingDir, which is fsynced before the batch's ack;
//     its index entries go to the store's staged records (pebble,
//     replicapoint.go). Neither the image nor the index changes. Everything
//     a staged batch reads (chunks present, copy sources, old bytes to
//     patch) is the image as of the last point, which nothing changes
//     while a point is staged; a present chunk that an earlier batch of the
//     same point staged over is staged again from the image, so the last
//     batch of a range always wins.
//   - CommitPoint checks that the receiver holds exactly the batches the
//     sender had acknowledged, marks the point committed (durably), writes
//     the redo files into the image in batch order, fsyncs it, commits the
//     index and records the recovery point.
//   - At start, a committed point is applied again (it is idempotent) and an
//     uncommitted one is discarded: the image is still the last point, and
//     the sender sends the point again.
//
// Before a replica's first point, batches are written in place as before
// (there is no point to keep); the first commit makes the point.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dmsync/dmsync/pebble"
)

// redoHeader is a redo record's header: offset u64 | length u32 | CRC-32C u32
// of the data, which follows.
const redoHeader = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// redoPrefix is the file name prefix of a volume's redo files.
func redoPrefix(vol string) string {
	h := sha256.Sum256([]byte(vol))
	return hex.EncodeToString(h[:8]) + "-"
}

func (r *Receiver) redoPath(vol string, token, batch uint64) string {
	return filepath.Join(r.cfg.StagingDir, fmt.Sprintf("%s%016x-%016x.redo", redoPrefix(vol), token, batch))
}

// removeRedo removes every redo file of vol and syncs the directory.
func (r *Receiver) removeRedo(vol string) error {
	if r.cfg.StagingDir == "" {
		return nil
	}
	ents, err := os.ReadDir(r.cfg.StagingDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("staging directory %s: %w", r.cfg.StagingDir, err)
	}
	p := redoPrefix(vol)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), p) && strings.HasSuffix(e.Name(), ".redo") {
			if err := os.Remove(filepath.Join(r.cfg.StagingDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return syncDir(r.cfg.StagingDir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// recoverPoint runs at start: it applies a committed point again, discards
// an uncommitted one, and loads the recovery point.
func (r *Receiver) recoverPoint(v *recvVolume) error {
	st, ok, err := r.cfg.Store.Staging(v.Name)
	if err != nil {
		return err
	}
	switch {
	case ok && st.Committed:
		r.log.Warn("a committed point was not fully applied; applying it again", "volume", v.Name, "point", fmt.Sprintf("%x", st.Token))
		if _, err := r.applyStaged(v, st); err != nil {
			return fmt.Errorf("volume %q: apply committed point again: %w", v.Name, err)
		}
	case ok:
		r.log.Info("discarding a point that was staged but not committed; the replica stays at its last point", "volume", v.Name, "batches", st.Batches)
		if err := r.cfg.Store.DiscardStaging(v.Name); err != nil {
			return err
		}
	}
	if err := r.removeRedo(v.Name); err != nil {
		return err
	}
	rp, ok, err := r.cfg.Store.Point(v.Name)
	if err != nil {
		return err
	}
	if ok {
		v.mu.Lock()
		v.hasPoint, v.point = true, recoveryPoint(rp)
		v.mu.Unlock()
	}
	return nil
}

func recoveryPoint(rp pebble.RecoveryPoint) RecoveryPoint {
	return RecoveryPoint{Seq: rp.Seq, TakenAt: time.Unix(0, rp.TakenAt), AppliedAt: time.Unix(0, rp.AppliedAt)}
}

// stageBegin makes token the volume's point being staged (dropping any
// other point's staged batches); called by Begin for a staged offer.
func (r *Receiver) stageBegin(v *recvVolume, token uint64) error {
	if r.cfg.StagingDir == "" {
		return fmt.Errorf("volume %q: this receiver has no staging directory, so it cannot take consistency points: %w", v.Name, ErrBadOffer)
	}
	v.pmu.Lock()
	defer v.pmu.Unlock()
	if err := r.finishCommittedLocked(v); err != nil {
		return err
	}
	if v.token == token {
		return nil
	}
	return r.restageLocked(v, token)
}

// finishCommittedLocked applies a point that was committed but whose
// apply failed (the image's disk failed mid-way): until it is applied the
// image is torn, and the point's staging files are all that can mend it,
// so nothing may replace or drop them first.
func (r *Receiver) finishCommittedLocked(v *recvVolume) error {
	st, ok, err := r.cfg.Store.Staging(v.Name)
	if err != nil || !ok || !st.Committed {
		return err
	}
	r.log.Warn("applying a committed point again (its apply failed)", "volume", v.Name, "point", fmt.Sprintf("%x", st.Token))
	if _, err := r.applyStaged(v, st); err != nil {
		return fmt.Errorf("volume %q: a committed point could not be applied (the image stays torn until it is): %w", v.Name, err)
	}
	return nil
}

// restageLocked drops the staged point, if any, and starts token.
func (r *Receiver) restageLocked(v *recvVolume, token uint64) error {
	if v.token != 0 {
		r.log.Info("a new point replaces the one being staged", "volume", v.Name)
	}
	if err := r.removeRedo(v.Name); err != nil {
		return err
	}
	if err := r.cfg.Store.BeginStaging(v.Name, token); err != nil {
		return err
	}
	v.token, v.staged = token, nil
	return nil
}

// dropStaging discards the point being staged (an in-place batch is about
// to change the image its staged reads assumed).
func (r *Receiver) dropStaging(v *recvVolume) error {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	if err := r.finishCommittedLocked(v); err != nil {
		return err
	}
	if v.token == 0 {
		return nil
	}
	if err := r.removeRedo(v.Name); err != nil {
		return err
	}
	if err := r.cfg.Store.DiscardStaging(v.Name); err != nil {
		return err
	}
	v.token, v.staged = 0, nil
	return nil
}

// stagedOverlaps reports whether an earlier batch of the point being
// staged covered any byte of [start, end).
func (v *recvVolume) stagedOverlaps(start, end uint64) bool {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	for _, s := range v.staged {
		if s.Start < end && start < s.End {
			return true
		}
	}
	return false
}

// stage appends data at off to the batch's redo file.
func (b *Batch) stage(data []byte, off uint64) error {
	if b.redo == nil {
		f, err := os.OpenFile(b.r.redoPath(b.v.Name, b.offer.Point, b.id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("volume %q: staging file: %w", b.v.Name, err)
		}
		b.redo = f
	}
	var h [redoHeader]byte
	binary.BigEndian.PutUint64(h[:], off)
	binary.BigEndian.PutUint32(h[8:], uint32(len(data)))
	binary.BigEndian.PutUint32(h[12:], crc32.Checksum(data, castagnoli))
	for _, p := range [][]byte{h[:], data} {
		if _, err := b.redo.Write(p); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return fmt.Errorf("volume %q: staging file %s: %w: %w (free space in the receiver's state directory)", b.v.Name, b.redo.Name(), ErrNoSpace, err)
			}
			return fmt.Errorf("volume %q: staging file %s: %w", b.v.Name, b.redo.Name(), err)
		}
	}
	b.redoBytes += uint64(redoHeader + len(data))
	b.r.staged.Add(uint64(redoHeader + len(data)))
	return nil
}

// commitStaged makes a staged batch durable: its redo file, then its
// record in the store.
func (b *Batch) commitStaged() (Ack, error) {
	v := b.v
	if b.redo != nil {
		err := b.redo.Sync()
		if cerr := b.redo.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = syncDir(b.r.cfg.StagingDir)
		}
		if err != nil {
			b.abortStaged()
			if errors.Is(err, syscall.ENOSPC) {
				return Ack{}, fmt.Errorf("volume %q: sync staging file: %w: %w", v.Name, ErrNoSpace, err)
			}
			return Ack{}, fmt.Errorf("volume %q: sync staging file: %w", v.Name, err)
		}
		b.redo = nil
	}
	idx := make([]pebble.ReplicaChunk, len(b.chunks))
	for i, c := range b.chunks {
		idx[i] = pebble.ReplicaChunk{Offset: c.Offset, Length: c.Length, ID: c.ID}
	}
	v.pmu.Lock()
	defer v.pmu.Unlock()
	if v.token != b.offer.Point {
		os.Remove(b.r.redoPath(v.Name, b.offer.Point, b.id))
		return Ack{}, fmt.Errorf("volume %q: point %x was replaced while this batch was staged: %w", v.Name, b.offer.Point, ErrPointLost)
	}
	if err := b.r.cfg.Store.StageBatch(v.Name, b.offer.Point, pebble.StagedBatch{Batch: b.id, RedoBytes: b.redoBytes, Ranges: b.ranges, Chunks: idx}); err != nil {
		os.Remove(b.r.redoPath(v.Name, b.offer.Point, b.id))
		return Ack{}, err
	}
	v.staged = append(v.staged, b.ranges...)
	if err := b.r.storeMeta(v, b.offer.Params); err != nil {
		return Ack{}, err
	}
	return Ack{}, nil
}

// abortStaged drops a staged batch's redo file.
func (b *Batch) abortStaged() {
	if b.redo != nil {
		b.redo.Close()
		b.redo = nil
	}
	if b.redoBytes > 0 {
		os.Remove(b.r.redoPath(b.v.Name, b.offer.Point, b.id))
	}
}

// CommitPoint applies the point staged under c.Point to the replica, once
// no batch of the volume is in flight, and makes it the recovery point. It
// fails with ErrPointLost unless the receiver holds exactly c.Batches
// batches of the point.
func (r *Receiver) CommitPoint(ctx context.Context, peer string, c Commit) (Committed, error) {
	v, err := r.volume(peer, c.Volume)
	if err != nil {
		return Committed{}, err
	}
	if c.Point == 0 {
		return Committed{}, fmt.Errorf("volume %q: commit of point 0: %w", v.Name, ErrProtocol)
	}
	if r.cfg.StagingDir == "" {
		return Committed{}, fmt.Errorf("volume %q: this receiver has no staging directory, so it cannot take consistency points: %w", v.Name, ErrBadOffer)
	}
	id := r.seq.Add(1)
	if err := v.acquire(ctx, id, []pebble.ByteRange{{Start: 0, End: v.Size}}); err != nil {
		return Committed{}, fmt.Errorf("volume %q busy: %w", v.Name, err)
	}
	defer v.releaseBatch(id)
	v.pmu.Lock()
	defer v.pmu.Unlock()
	if err := r.finishCommittedLocked(v); err != nil {
		return Committed{}, err
	}
	if c.Batches == 0 && v.token != c.Point {
		// A point with nothing to stage (every region the sender captured
		// was unchanged): start it empty.
		if err := r.restageLocked(v, c.Point); err != nil {
			return Committed{}, err
		}
	}
	st, ok, err := r.cfg.Store.Staging(v.Name)
	if err != nil {
		return Committed{}, err
	}
	if !ok || st.Token != c.Point || v.token != c.Point || int(st.Batches) != c.Batches {
		return Committed{}, fmt.Errorf("volume %q: point %x: the receiver holds %d of the %d batches sent (it restarted or another point replaced it): %w", v.Name, c.Point, st.Batches, c.Batches, ErrPointLost)
	}
	if err := r.cfg.Store.CommitStaging(v.Name, c.Point, c.TakenAt.UnixNano()); err != nil {
		return Committed{}, err
	}
	st.Committed, st.TakenAt = true, c.TakenAt.UnixNano()
	rp, err := r.applyStaged(v, st)
	if err != nil {
		return Committed{}, err
	}
	info, err := r.root(v)
	if err != nil {
		return Committed{}, err
	}
	return Committed{Point: rp, Root: info.Root, Chunks: info.Chunks}, nil
}

// applyStaged writes a committed point's redo files into the image in batch
// order, syncs it, commits the index and records the recovery point. It is
// idempotent: after a crash it runs again from the start. The caller holds
// v.pmu (or is NewReceiver).
func (r *Receiver) applyStaged(v *recvVolume, st pebble.Staging) (RecoveryPoint, error) {
	sbs, err := r.cfg.Store.StagedBatches(v.Name)
	if err != nil {
		return RecoveryPoint{}, err
	}
	if len(sbs) != int(st.Batches) {
		return RecoveryPoint{}, fmt.Errorf("volume %q: committed point has %d staged batches, expected %d", v.Name, len(sbs), st.Batches)
	}
	// Every record is checked before the first is written: a corrupt
	// staging file leaves the image at the last point.
	var buf []byte
	wrote := false
	for _, write := range []bool{false, true} {
		for _, sb := range sbs {
			if sb.RedoBytes == 0 {
				continue
			}
			n, err := r.applyRedo(v, r.redoPath(v.Name, st.Token, sb.Batch), sb.RedoBytes, &buf, write)
			if err != nil {
				return RecoveryPoint{}, err
			}
			wrote = wrote || n > 0
		}
	}
	if wrote {
		if err := r.syncVolume(v); err != nil {
			return RecoveryPoint{}, err
		}
	}
	// The point's batches change the index, and the point becomes the
	// recovery point, in one synced write.
	all := make([]pebble.AppliedBatch, len(sbs))
	for i, sb := range sbs {
		all[i] = pebble.AppliedBatch{Batch: sb.Batch, Ranges: sb.Ranges, Chunks: sb.Chunks}
	}
	prev, _, err := r.cfg.Store.Point(v.Name)
	if err != nil {
		return RecoveryPoint{}, err
	}
	rp := pebble.RecoveryPoint{Seq: prev.Seq + 1, Token: st.Token, TakenAt: st.TakenAt, AppliedAt: time.Now().UnixNano()}
	if err := r.cfg.Store.ApplyPoint(v.Name, all, rp); err != nil {
		return RecoveryPoint{}, err
	}
	for _, sb := range sbs {
		v.tree.changed(sb.Ranges)
		v.ids.add(sb.Chunks)
	}
	if err := r.removeRedo(v.Name); err != nil {
		r.log.Warn("cannot remove applied staging files", "volume", v.Name, "err", err)
	}
	v.token, v.staged = 0, nil
	v.mu.Lock()
	v.hasPoint, v.point = true, recoveryPoint(rp)
	v.mu.Unlock()
	r.log.Info("consistency point applied", "volume", v.Name, "seq", rp.Seq, "batches", len(sbs), "taken_at", time.Unix(0, rp.TakenAt).UTC())
	return recoveryPoint(rp), nil
}

// redoReadBuf is the read buffer of a redo file: its records are small
// (a changed block each), so reading them one by one costs two system
// calls per block.
const redoReadBuf = 1 << 20

// applyRedo checks one redo file's records (its first size bytes) against
// their CRCs and, if write, writes them into the image; it returns the
// bytes written.
func (r *Receiver) applyRedo(v *recvVolume, path string, size uint64, buf *[]byte, write bool) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("volume %q: staging file of a committed point: %w (the point cannot be applied; the replica needs `dmsync verify --repair` from its sender)", v.Name, err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, redoReadBuf)
	var pos, wrote uint64
	var h [redoHeader]byte
	for pos < size {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return wrote, fmt.Errorf("volume %q: staging file %s at %d: %w", v.Name, path, pos, err)
		}
		off := binary.BigEndian.Uint64(h[:])
		n := binary.BigEndian.Uint32(h[8:])
		if off+uint64(n) > v.Size || pos+redoHeader+uint64(n) > size {
			return wrote, fmt.Errorf("volume %q: staging file %s at %d: record [%d,+%d) is corrupt", v.Name, path, pos, off, n)
		}
		if cap(*buf) < int(n) {
			*buf = make([]byte, n)
		}
		d := (*buf)[:n]
		if _, err := io.ReadFull(br, d); err != nil {
			return wrote, fmt.Errorf("volume %q: staging file %s at %d: %w", v.Name, path, pos, err)
		}
		if crc32.Checksum(d, castagnoli) != binary.BigEndian.Uint32(h[12:]) {
			return wrote, fmt.Errorf("volume %q: staging file %s at %d: checksum mismatch", v.Name, path, pos)
		}
		pos += redoHeader + uint64(n)
		if !write {
			continue
		}
		r.applied.Add(uint64(n))
		if _, err := v.Image.WriteAt(d, int64(off)); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return wrote, fmt.Errorf("volume %q: write at %d: %w: %w", v.Name, off, ErrNoSpace, err)
			}
			return wrote, fmt.Errorf("volume %q: write at %d: %w", v.Name, off, err)
		}
		wrote += uint64(n)
	}
	return wrote, nil
}
