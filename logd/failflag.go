package logd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// failFlagSize is the fail flag's fixed size: every write overwrites it in
// place, so setting it needs no new blocks on a full file system.
const failFlagSize = 4096

const (
	flagOK     = "dmsync-store ok"
	flagFailed = "dmsync-store FAILED"
)

// FailFlag is a small preallocated file next to the store that records
// "the store failed: marks may be missing". It is written in place with
// fdatasync, which works on a full file system; it is checked at start
// (Server.UseFailFlag).
type FailFlag struct {
	f      *os.File
	path   string
	set    bool
	reason string
}

// OpenFailFlag opens (creating and preallocating) the flag at path. A flag
// that cannot be read, or reads as anything but "ok", counts as set: the
// safe side is a full resync.
func OpenFailFlag(path string) (*FailFlag, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		created = true
	}
	if err != nil {
		return nil, fmt.Errorf("store fail flag %s: %w", path, err)
	}
	ff := &FailFlag{f: f, path: path}
	if created {
		if err := ff.write(flagOK); err != nil {
			f.Close()
			os.Remove(path)
			return nil, err
		}
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			_ = d.Sync()
			d.Close()
		}
		return ff, nil
	}
	buf := make([]byte, failFlagSize)
	n, _ := f.ReadAt(buf, 0)
	line, _, _ := strings.Cut(string(bytes.TrimRight(buf[:n], "\x00 \n")), "\n")
	if line != flagOK {
		ff.set, ff.reason = true, strings.TrimSpace(strings.TrimPrefix(line, flagFailed))
		if ff.reason == "" {
			ff.reason = "unreadable flag"
		}
	}
	if n < failFlagSize {
		// Short (an older or torn file): grow it now, while it can be.
		_ = ff.write(map[bool]string{true: flagFailed + " " + ff.reason, false: flagOK}[ff.set])
	}
	return ff, nil
}

// Path returns the flag's path.
func (f *FailFlag) Path() string { return f.path }

// IsSet reports whether the flag was set when opened (or since), and why.
func (f *FailFlag) IsSet() (bool, string) { return f.set, f.reason }

// Set records a store failure durably.
func (f *FailFlag) Set(reason string) error {
	reason = strings.ReplaceAll(reason, "\n", " ")
	f.set, f.reason = true, time.Now().UTC().Format(time.RFC3339)+" "+reason
	return f.write(flagFailed + " " + f.reason)
}

// Clear records that the store holds every mark again.
func (f *FailFlag) Clear() error {
	if err := f.write(flagOK); err != nil {
		return err
	}
	f.set, f.reason = false, ""
	return nil
}

// Close closes the file.
func (f *FailFlag) Close() error { return f.f.Close() }

func (f *FailFlag) write(line string) error {
	buf := make([]byte, failFlagSize)
	copy(buf, line+"\n")
	if len(line)+1 > failFlagSize {
		copy(buf[failFlagSize-1:], "\n")
	}
	if _, err := f.f.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("write store fail flag %s: %w", f.path, err)
	}
	if err := fdatasync(f.f); err != nil {
		return fmt.Errorf("sync store fail flag %s: %w", f.path, err)
	}
	return nil
}
