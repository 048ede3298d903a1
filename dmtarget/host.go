package dmtarget

import "context"

// Host is what the stack builder needs from the system besides
// device-mapper: block device facts and running cryptsetup. SystemHost is
// the real one; dmtargettest.Host is a fake.
type Host interface {
	// DeviceSize returns the size in bytes of the block device at path.
	DeviceSize(path string) (uint64, error)
	// CheckUnused returns an error naming the user (a mount point, a
	// holder device, another program) if the block device is in use.
	CheckUnused(path string) error
	// Exists reports whether path exists (key files, the daemon socket).
	Exists(path string) bool
	// Run runs a program (cryptsetup) and returns its error with output.
	Run(ctx context.Context, argv ...string) error
}
