//go:build !linux

package dmtarget

import (
	"context"
	"fmt"
	"os"
)

// SystemHost is the real Host on Linux; elsewhere it fails.
type SystemHost struct{ Env []string }

var _ Host = SystemHost{}

// DeviceSize fails: block devices are handled on Linux only.
func (SystemHost) DeviceSize(path string) (uint64, error) {
	return 0, fmt.Errorf("size of %s: %w on this OS", path, ErrUnsupported)
}

// CheckUnused fails: block devices are handled on Linux only.
func (SystemHost) CheckUnused(path string) error {
	return fmt.Errorf("check %s: %w on this OS", path, ErrUnsupported)
}

// Exists reports whether path exists.
func (SystemHost) Exists(path string) bool { _, err := os.Stat(path); return err == nil }

// Run fails: cryptsetup is Linux only.
func (SystemHost) Run(ctx context.Context, argv ...string) error {
	return fmt.Errorf("run %v: %w on this OS", argv, ErrUnsupported)
}
