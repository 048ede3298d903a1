package dmtarget

import (
	"context"
	"errors"
)

// Sentinel errors callers branch on. Errors from DM wrap one of these when
// the kernel's errno says so (and the errno itself).
var (
	// ErrNotFound: no dm device with that name (ENXIO).
	ErrNotFound = errors.New("device-mapper device not found")
	// ErrExists: a dm device with that name or uuid exists (EEXIST).
	ErrExists = errors.New("device-mapper device already exists")
	// ErrBusy: the device is open or in use (EBUSY).
	ErrBusy = errors.New("device-mapper device is busy")
	// ErrUnsupported: device-mapper is not available on this system.
	ErrUnsupported = errors.New("device-mapper is not available")
)

// DM is the device-mapper interface the stack builder and the daemon use.
// The real implementation is Control (the dm ioctl on /dev/mapper/control);
// dmtargettest.Fake records calls for tests. Names are dm device names.
type DM interface {
	// Version returns the kernel's dm ioctl interface version.
	Version(ctx context.Context) (Version, error)
	// Create creates a device with no table (DM_DEV_CREATE). uuid may be
	// empty.
	Create(ctx context.Context, name, uuid string) (Info, error)
	// Load loads a table into the inactive slot (DM_TABLE_LOAD).
	Load(ctx context.Context, name string, table []Target) error
	// Suspend suspends the device, flushing outstanding I/O.
	Suspend(ctx context.Context, name string) error
	// SuspendWith suspends the device as o says (DM_NOFLUSH_FLAG,
	// DM_SKIP_LOCKFS_FLAG).
	SuspendWith(ctx context.Context, name string, o SuspendOptions) error
	// Resume makes an inactive table live and resumes I/O.
	Resume(ctx context.Context, name string) (Info, error)
	// Remove removes the device and its tables (DM_DEV_REMOVE).
	Remove(ctx context.Context, name string) error
	// Info returns the device's state (DM_DEV_STATUS).
	Info(ctx context.Context, name string) (Info, error)
	// Table returns the live table (DM_TABLE_STATUS with STATUS_TABLE).
	Table(ctx context.Context, name string) (Info, []Target, error)
	// Status returns each target's status text (DM_TABLE_STATUS).
	Status(ctx context.Context, name string) (Info, []Target, error)
	// List lists all dm devices (DM_LIST_DEVICES).
	List(ctx context.Context) ([]DeviceName, error)
	// Wait blocks until the device's event number differs from eventNr
	// (DM_DEV_WAIT), or ctx is done, and returns the new info and status.
	Wait(ctx context.Context, name string, eventNr uint32) (Info, []Target, error)
	// Message sends a message to the target at sector (DM_TARGET_MSG) and
	// returns the target's reply text, if any.
	Message(ctx context.Context, name string, sector uint64, msg string) (string, error)
}

// SuspendOptions are the ways to suspend a device.
type SuspendOptions struct {
	// NoFlush: do not flush; a mirror re-queues the writes it holds after
	// a leg failure (they complete on the next table) instead of failing
	// them with EIO.
	NoFlush bool
	// NoLockFS: do not freeze a file system on the device first. Needed
	// while writes hang: the freeze would wait for them forever.
	NoLockFS bool
}
