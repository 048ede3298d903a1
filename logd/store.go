package logd

import (
	"fmt"

	"github.com/dmsync/dmsync/pebble"
)

// Store persists the core's changes. Commit with sync must not return
// before everything committed so far is durable.
type Store interface {
	Load() ([]VolumeSnapshot, error)
	Commit(changes []Change, sync bool) error
}

// PebbleStore keeps the dirty log in dmsync's Pebble database.
type PebbleStore struct{ DB *pebble.DB }

// Load reads every volume's durable state.
func (s PebbleStore) Load() ([]VolumeSnapshot, error) {
	vols, err := s.DB.LoadDirtyLog()
	if err != nil {
		return nil, err
	}
	out := make([]VolumeSnapshot, 0, len(vols))
	for _, v := range vols {
		r := v.Record
		out = append(out, VolumeSnapshot{
			UUID:   v.UUID,
			Meta:   VolumeMeta{RegionSectors: r.RegionSectors, Regions: r.Regions, Sectors: r.Sectors, NextGen: r.NextGen, Table: r.Table},
			InSync: v.InSync, Marked: v.Marked, Pending: v.Pending,
		})
	}
	return out, nil
}

// Commit writes the changes in one batch, synced if sync.
func (s PebbleStore) Commit(changes []Change, sync bool) error {
	b := s.DB.NewDirtyLogBatch()
	defer b.Close()
	for _, c := range changes {
		var err error
		switch c.Kind {
		case ChangeVolume:
			m := c.Meta
			err = b.PutVolume(c.UUID, pebble.VolumeRecord{RegionSectors: m.RegionSectors, Regions: m.Regions,
				Sectors: m.Sectors, NextGen: m.NextGen, Table: m.Table})
		case ChangeInSync:
			err = b.PutChunk(pebble.BitmapInSync, c.UUID, c.Chunk, c.Words)
		case ChangeMarked:
			err = b.PutChunk(pebble.BitmapMarked, c.UUID, c.Chunk, c.Words)
		case ChangePending:
			err = b.PutPending(c.UUID, c.Region, c.Gen)
		default:
			err = fmt.Errorf("unknown change kind %d", c.Kind)
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", c.UUID, err)
		}
	}
	return b.Commit(sync)
}

// Failed reports the database's fatal error (see pebble.DB.Failed).
func (s PebbleStore) Failed() (<-chan struct{}, error) { return s.DB.Failed() }
