//go:build linux

package dmtarget

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// makeNode creates dir/NAME as a block device node for info's device,
// replacing a stale node with another device number.
func makeNode(dir string, info Info) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create device node directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, info.Name)
	rdev := unix.Mkdev(info.Major, info.Minor)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFBLK && uint64(st.Rdev) == rdev {
			return nil
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("replace stale device node %s: %w", path, err)
		}
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(rdev)); err != nil {
		return fmt.Errorf("mknod %s (%s): %w", path, info.DevT(), err)
	}
	return nil
}

// removeNode removes dir/NAME if it exists.
func removeNode(dir, name string) error {
	path := filepath.Join(dir, name)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove device node %s: %w", path, err)
	}
	return nil
}

// nodeReady reports whether dir/NAME resolves to info's block device.
func nodeReady(dir string, info Info) bool {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, info.Name), &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFBLK && uint64(st.Rdev) == unix.Mkdev(info.Major, info.Minor)
}

// waitNode waits for udev to create the node of a device just resumed. It
// re-checks on every uevent from l (if any) and at least every 50 ms; after
// opts.NodeTimeout it creates the node itself and logs a warning. Uevents
// only trigger a re-check, so a spoofed one can do no harm.
func waitNode(ctx context.Context, opts Options, info Info, l *ueventListener) error {
	deadline := time.Now().Add(opts.NodeTimeout)
	for !nodeReady(opts.MapperDir, info) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for device node %s: %w", filepath.Join(opts.MapperDir, info.Name), err)
		}
		if time.Now().After(deadline) {
			opts.Logger.Warn("udev did not create the device node in time; creating it", "name", info.Name, "dev", info.DevT(), "timeout", opts.NodeTimeout)
			return makeNode(opts.MapperDir, info)
		}
		if l != nil {
			if _, err := l.Next(50 * time.Millisecond); err != nil {
				l = nil // fall back to polling
			}
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}
