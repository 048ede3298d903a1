package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dmsync/dmsync/dmtarget"
)

// A log server killed (kill -9, OOM, a crash) while it held a freeze leaves
// the frozen devices suspended, and every write to the volume waits. So
// each freeze is recorded, durably, before its first suspend, in a file of
// the state directory's frozen/ naming its devices; the file goes once they
// are resumed. The next log server resumes whatever a file names, at its
// start, before it serves anything.

// frozenDirName is the directory, in the state directory, of the records.
const frozenDirName = "frozen"

// recordFreeze durably records fv's devices before they are suspended. No
// directory (tests): nothing is recorded.
func (f *freezer) recordFreeze(fv *frozen) error {
	if f.dir == "" {
		return nil
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	path := f.recordPath(fv)
	tmp := path + ".tmp"
	file, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = file.WriteString(strings.Join(fv.devices, "\n") + "\n")
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(f.dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("record the freeze in %s: %w", f.dir, err)
	}
	return nil
}

func (f *freezer) recordPath(fv *frozen) string {
	return filepath.Join(f.dir, fmt.Sprintf("%d-%d", os.Getpid(), fv.token))
}

// forgetFreeze removes fv's record once every device was resumed.
func (f *freezer) forgetFreeze(fv *frozen) {
	if f.dir == "" {
		return
	}
	if err := os.Remove(f.recordPath(fv)); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.log.Warn("cannot remove a freeze record", "err", err)
	}
}

// resumeLeftovers resumes the devices that records of an earlier log
// server name, if they are still suspended, and removes the records. A
// device that cannot be resumed keeps its record (the next start tries
// again) and is logged at ERROR with the command that resumes it.
func (f *freezer) resumeLeftovers() {
	if f.dir == "" {
		return
	}
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			f.log.Error("cannot read the freeze records: devices an earlier log server froze may stay suspended", "dir", f.dir, "err", err)
		}
		return
	}
	for _, e := range ents {
		path := filepath.Join(f.dir, e.Name())
		if strings.HasSuffix(e.Name(), ".tmp") {
			os.Remove(path) // written before any suspend
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			f.log.Error("cannot read a freeze record", "path", path, "err", err)
			continue
		}
		devs := strings.Fields(string(b))
		failed := false
		dm, err := f.device()
		if err != nil {
			f.log.Error("devices an earlier log server froze may stay suspended: no device-mapper", "devices", devs, "err", err)
			continue
		}
		for i := len(devs) - 1; i >= 0; i-- {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			info, err := dm.Info(ctx, devs[i])
			if err == nil && info.Suspended {
				f.log.Warn("resuming a device an earlier log server left frozen", "device", devs[i])
				_, err = dm.Resume(ctx, devs[i])
			}
			cancel()
			if err != nil && !errors.Is(err, dmtarget.ErrNotFound) {
				failed = true
				f.log.Error("cannot resume a device an earlier log server froze: writes to it block until it is resumed (dmsetup resume "+devs[i]+")",
					"device", devs[i], "err", err)
			}
		}
		if !failed {
			os.Remove(path)
		}
	}
	syncDir(f.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
