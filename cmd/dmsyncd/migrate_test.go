package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/dmsync/dmsync/pebble"
)

// TestMigrateReplicaState: replica keys an earlier dmsyncd left in the
// dirty log's store move to the replicator's store, once; the dirty log's
// own keys stay.
func TestMigrateReplicaState(t *testing.T) {
	cfg := testConfig(t)
	old, err := pebble.Open(filepath.Join(cfg.stateDir, logDirName), nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{"\x20a": "chunk", "\x31\x05vol-1": "replica", "\x38x": "progress", "\x3fz": "last"}
	for k, v := range keys {
		if err := old.Raw().Set([]byte(k), []byte(v), pebbledb.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Raw().Set([]byte("\x40beyond"), []byte("stays"), pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	old.Close()

	d, err := openDaemon(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second run finds nothing to move
		if err := migrateReplicaState(d, context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for k := range keys {
		if _, c, err := d.db.Raw().Get([]byte(k)); !errors.Is(err, pebbledb.ErrNotFound) {
			if err == nil {
				c.Close()
			}
			t.Errorf("key %q still in the dirty log's store", k)
		}
	}
	if v, c, err := d.db.Raw().Get([]byte("\x40beyond")); err != nil || string(v) != "stays" {
		t.Errorf("a key outside the range: %q %v", v, err)
	} else {
		c.Close()
	}
	d.close()
	rep, err := pebble.Open(filepath.Join(cfg.stateDir, replicaDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	for k, want := range keys {
		v, c, err := rep.Raw().Get([]byte(k))
		if err != nil || string(v) != want {
			t.Errorf("replica store key %q: %q %v", k, v, err)
			continue
		}
		c.Close()
	}
}
