package pebble

// A replica's binding to its image and node (receiver side), prefix 0x3c.
//
//	0x3c V                      image identity: version u8 (1) | dev u64 |
//	                            ino u64 | size u64 | birth unix nanos i64 |
//	                            node, kind, tag: each a u8 length then bytes
//
// The identity says which image the volume's index (0x30..0x33) describes
// and which node wrote it; package internal/replicate computes it and
// decides what a difference means. pebble only stores it.
//
// What changes together, and when it is synced:
//   - SetImageIdent writes 0x3c V alone, synced.
//   - DropReplica deletes, in one synced batch, every receiver-side key of
//     V: 0x30 V, the 0x31/0x32 pairs, the 0x33 markers, the point being
//     staged and its batches (0x34, 0x35), the recovery point (0x36) and
//     0x3c V. The sender-side 0x38 keys are not touched.

import (
	"encoding/binary"
	"errors"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

const prefixReplicaImage = 0x3c

// ImageIdent identifies the image a replica's index describes and the node
// that wrote the index. Its fields mean what the caller says they mean;
// the store keeps them as they are.
type ImageIdent struct {
	// Node is the id of the node that wrote the index.
	Node string
	// Kind names the image's type ("file", "block").
	Kind string
	// Dev, Ino, Size and Birth locate the image (for a file: its device,
	// inode, size and creation time; for a block device: its device
	// number and size).
	Dev, Ino, Size uint64
	Birth          int64
	// Tag is a stable id of the image, "" if it has none.
	Tag string
}

const imageIdentVersion = 1

func encodeImageIdent(id ImageIdent) ([]byte, error) {
	v := []byte{imageIdentVersion}
	v = binary.BigEndian.AppendUint64(v, id.Dev)
	v = binary.BigEndian.AppendUint64(v, id.Ino)
	v = binary.BigEndian.AppendUint64(v, id.Size)
	v = binary.BigEndian.AppendUint64(v, uint64(id.Birth))
	for _, s := range []string{id.Node, id.Kind, id.Tag} {
		if len(s) > 255 {
			return nil, fmt.Errorf("image identity field %q: longer than 255 bytes", s)
		}
		v = append(v, byte(len(s)))
		v = append(v, s...)
	}
	return v, nil
}

func decodeImageIdent(v []byte) (ImageIdent, error) {
	bad := errors.New("corrupt image identity")
	if len(v) < 33 || v[0] != imageIdentVersion {
		return ImageIdent{}, bad
	}
	id := ImageIdent{
		Dev: binary.BigEndian.Uint64(v[1:]), Ino: binary.BigEndian.Uint64(v[9:]),
		Size: binary.BigEndian.Uint64(v[17:]), Birth: int64(binary.BigEndian.Uint64(v[25:])),
	}
	rest := v[33:]
	var fields [3]string
	for i := range fields {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return ImageIdent{}, bad
		}
		fields[i] = string(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
	}
	if len(rest) != 0 {
		return ImageIdent{}, bad
	}
	id.Node, id.Kind, id.Tag = fields[0], fields[1], fields[2]
	return id, nil
}

// ImageIdent returns the stored identity of vol's image, if any.
func (s *ReplicaStore) ImageIdent(vol string) (ImageIdent, bool, error) {
	k, err := volPrefix(prefixReplicaImage, vol)
	if err != nil {
		return ImageIdent{}, false, err
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return ImageIdent{}, false, nil
	}
	if err != nil {
		return ImageIdent{}, false, fmt.Errorf("replica image identity %s: %w", vol, err)
	}
	defer closer.Close()
	id, err := decodeImageIdent(v)
	if err != nil {
		return ImageIdent{}, false, fmt.Errorf("replica image identity %s: %w", vol, err)
	}
	return id, true, nil
}

// SetImageIdent durably stores the identity of vol's image.
func (s *ReplicaStore) SetImageIdent(vol string, id ImageIdent) error {
	k, err := volPrefix(prefixReplicaImage, vol)
	if err != nil {
		return err
	}
	v, err := encodeImageIdent(id)
	if err != nil {
		return fmt.Errorf("replica image identity %s: %w", vol, err)
	}
	if err := s.db.Set(k, v, pebbledb.Sync); err != nil {
		return fmt.Errorf("replica image identity %s: %w", vol, err)
	}
	return nil
}

// receiverPrefixes are the tables of a volume's replica (all but 0x3c).
var receiverPrefixes = []byte{prefixReplicaMeta, prefixReplicaChunk, prefixReplicaByID, prefixReplicaApplying,
	prefixReplicaStaging, prefixReplicaStaged, prefixReplicaPoint}

// HasReplica reports whether the store holds anything of vol's replica:
// its meta, an index entry, an applying marker, a staged or a recovery
// point.
func (s *ReplicaStore) HasReplica(vol string) (bool, error) {
	for _, p := range receiverPrefixes {
		vp, err := volPrefix(p, vol)
		if err != nil {
			return false, err
		}
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: vp, UpperBound: upperBound(vp)})
		if err != nil {
			return false, fmt.Errorf("replica %s: %w", vol, err)
		}
		found := it.First()
		err = it.Error()
		it.Close()
		if err != nil {
			return false, fmt.Errorf("replica %s: %w", vol, err)
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

// DropReplica durably forgets vol's replica: its meta, index, applying
// markers, staged and recovery points and image identity, in one synced
// batch, so that the replica counts as empty. The sender-side progress
// (0x38) stays; staged batches' redo files, which the store does not
// hold, are the caller's.
func (s *ReplicaStore) DropReplica(vol string) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, p := range [...]byte{prefixReplicaMeta, prefixReplicaChunk, prefixReplicaByID, prefixReplicaApplying,
		prefixReplicaStaging, prefixReplicaStaged, prefixReplicaPoint, prefixReplicaImage} {
		vp, err := volPrefix(p, vol)
		if err != nil {
			return err
		}
		// The length byte ends the prefix: no other volume's keys share it.
		if err := b.DeleteRange(vp, upperBound(vp), nil); err != nil {
			return fmt.Errorf("drop replica %s: %w", vol, err)
		}
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("drop replica %s: %w", vol, err)
	}
	return nil
}
