package dmtarget

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// RecordStore keeps LegFailure records durably, keyed by log uuid.
type RecordStore interface {
	// Get returns the record of a log uuid, nil if there is none.
	Get(logUUID string) (*LegFailure, error)
	// Put stores a record durably before it returns.
	Put(rec LegFailure) error
	// Delete removes a record (no error if there is none).
	Delete(logUUID string) error
	// All returns every record, by log uuid.
	All() ([]LegFailure, error)
}

// FileRecords is a RecordStore of one JSON file per volume in Dir
// (dmsyncd uses STATE_DIR/legs). A record is written to a temporary file,
// fsynced and renamed, and the directory fsynced: it is there after a
// crash or not at all. It does not touch the dirty log's store, so a
// failing record write never stops the log server.
type FileRecords struct {
	Dir string
	mu  sync.Mutex
}

var _ RecordStore = (*FileRecords)(nil)

func (r *FileRecords) path(logUUID string) (string, error) {
	if logUUID == "" || strings.ContainsAny(logUUID, "/\x00") || logUUID[0] == '.' {
		return "", fmt.Errorf("leg failure record: log uuid %q cannot name a file", logUUID)
	}
	return filepath.Join(r.Dir, logUUID+".json"), nil
}

// Get implements RecordStore.
func (r *FileRecords) Get(logUUID string) (*LegFailure, error) {
	p, err := r.path(logUUID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read leg failure record: %w", err)
	}
	var rec LegFailure
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("leg failure record %s is damaged (%v): fix or remove the file", p, err)
	}
	return &rec, nil
}

// Put implements RecordStore.
func (r *FileRecords) Put(rec LegFailure) error {
	p, err := r.path(rec.LogUUID)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return fmt.Errorf("leg failure records: %w", err)
	}
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write leg failure record: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write leg failure record %s: %w", p, err)
	}
	return syncDir(r.Dir)
}

// Delete implements RecordStore.
func (r *FileRecords) Delete(logUUID string) error {
	p, err := r.path(logUUID)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove leg failure record: %w", err)
	}
	return syncDir(r.Dir)
}

// All implements RecordStore. A damaged file is skipped with its error
// joined to the result.
func (r *FileRecords) All() ([]LegFailure, error) {
	ents, err := os.ReadDir(r.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("leg failure records: %w", err)
	}
	var out []LegFailure
	var errs []error
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		rec, err := r.Get(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if rec != nil {
			out = append(out, *rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LogUUID < out[j].LogUUID })
	return out, errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// MemRecords is an in-memory RecordStore for tests.
type MemRecords struct {
	mu   sync.Mutex
	recs map[string]LegFailure
}

var _ RecordStore = (*MemRecords)(nil)

// Get implements RecordStore.
func (m *MemRecords) Get(logUUID string) (*LegFailure, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[logUUID]
	if !ok {
		return nil, nil
	}
	return &r, nil
}

// Put implements RecordStore.
func (m *MemRecords) Put(rec LegFailure) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recs == nil {
		m.recs = map[string]LegFailure{}
	}
	m.recs[rec.LogUUID] = rec
	return nil
}

// Delete implements RecordStore.
func (m *MemRecords) Delete(logUUID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.recs, logUUID)
	return nil
}

// All implements RecordStore.
func (m *MemRecords) All() ([]LegFailure, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []LegFailure
	for _, r := range m.recs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LogUUID < out[j].LogUUID })
	return out, nil
}
