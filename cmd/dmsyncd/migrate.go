package main

import (
	"context"
	"fmt"
	"path/filepath"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/dmsync/dmsync/pebble"
)

// The replicator's key range (chunk index, replicas, send progress: see
// package pebble's key schema). Before the log server and the replicator
// became separate processes, these keys lived in the dirty log's store.
var (
	replicaLower = []byte{0x20}
	replicaUpper = []byte{0x40}
)

// migrateReplicaState moves replica state an earlier dmsyncd left in the
// dirty log's store into the replicator's own store, once: copy, sync,
// then delete from the log's store. A crash in between copies again (the
// copy overwrites with the same values). It runs before the first
// replicator starts, while the log server already serves the kernel.
func migrateReplicaState(d *daemon, ctx context.Context) error {
	src := d.db.Raw()
	it, err := src.NewIter(&pebbledb.IterOptions{LowerBound: replicaLower, UpperBound: replicaUpper})
	if err != nil {
		return err
	}
	defer it.Close()
	if !it.First() {
		return it.Error()
	}
	dir := filepath.Join(d.cfg.stateDir, replicaDir)
	dst, err := pebble.Open(dir, &pebble.Options{Logger: d.log})
	if err != nil {
		return err
	}
	defer dst.Close()
	b := dst.Raw().NewBatch()
	n := 0
	for valid := true; valid; valid = it.Next() {
		if ctx.Err() != nil {
			b.Close()
			return ctx.Err()
		}
		v, err := it.ValueAndErr()
		if err != nil {
			b.Close()
			return err
		}
		if err := b.Set(it.Key(), v, nil); err != nil {
			b.Close()
			return err
		}
		n++
		if b.Len() > 4<<20 {
			if err := b.Commit(pebbledb.NoSync); err != nil {
				return fmt.Errorf("copy replica state to %s: %w", dir, err)
			}
			b = dst.Raw().NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		b.Close()
		return err
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("copy replica state to %s: %w", dir, err)
	}
	if err := src.DeleteRange(replicaLower, replicaUpper, pebbledb.Sync); err != nil {
		return fmt.Errorf("remove moved replica state from the dirty log's store: %w", err)
	}
	d.log.Info("moved replica state out of the dirty log's store", "keys", n, "to", dir)
	return nil
}
