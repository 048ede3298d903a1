//go:build linux

package dmtarget

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	initialBufSize = 16 << 10
	maxBufSize     = 64 << 20
)

// Control is the real DM: dm ioctls on /dev/mapper/control. It also keeps
// /dev/mapper/NAME nodes in step with the devices (see Options.Udev).
type Control struct {
	f    *os.File
	opts Options
}

var _ DM = (*Control)(nil)

// Open opens the device-mapper control node. It needs root and the
// dm_mod module.
func Open(opts Options) (*Control, error) {
	opts.EnsureDefaults()
	f, err := os.OpenFile(ControlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open %s: %w: load the dm_mod module (modprobe dm_mod)", ControlPath, ErrUnsupported)
		}
		return nil, fmt.Errorf("open %s (needs root): %w", ControlPath, err)
	}
	c := &Control{f: f, opts: opts}
	if _, err := c.Version(context.Background()); err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the control node.
func (c *Control) Close() error { return c.f.Close() }

// ioctl runs one dm ioctl on f, growing the buffer while the kernel says
// it is full.
func ioctl(f *os.File, cmd uintptr, h header, payload []byte) (header, []byte, error) {
	h.Version = [3]uint32{interfaceMajor, interfaceMinor, interfacePatchlevel}
	for size := initialBufSize; ; size *= 4 {
		buf, err := encodeRequest(h, payload, size)
		if err != nil {
			return header{}, nil, err
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0])))
		runtime.KeepAlive(buf)
		runtime.KeepAlive(f)
		if errno != 0 {
			return header{}, nil, errno
		}
		out, data, err := decodeHeader(buf)
		if err != nil {
			return out, nil, err
		}
		if out.Flags&flagBufferFull != 0 {
			if size >= maxBufSize {
				return out, nil, fmt.Errorf("dm ioctl reply larger than %d bytes", maxBufSize)
			}
			continue
		}
		return out, data, nil
	}
}

func (c *Control) do(op, name string, cmd uintptr, h header, payload []byte) (header, []byte, error) {
	out, data, err := ioctl(c.f, cmd, h, payload)
	if err != nil {
		return out, nil, wrapErr(op, name, err)
	}
	return out, data, nil
}

// wrapErr adds context and the package's sentinel for errnos callers
// branch on.
func wrapErr(op, name string, err error) error {
	var sentinel error
	switch {
	case errors.Is(err, unix.ENXIO):
		sentinel = ErrNotFound
	case errors.Is(err, unix.EEXIST):
		sentinel = ErrExists
	case errors.Is(err, unix.EBUSY):
		sentinel = ErrBusy
	}
	if name != "" {
		op += " " + name
	}
	if sentinel != nil {
		return fmt.Errorf("%s: %w (%w)", op, sentinel, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Version implements DM.
func (c *Control) Version(ctx context.Context) (Version, error) {
	h, _, err := c.do("dm version", "", unix.DM_VERSION, header{}, nil)
	if err != nil {
		return Version{}, err
	}
	if h.Version[0] != interfaceMajor {
		return Version(h.Version), fmt.Errorf("dm ioctl interface %s: want major %d", Version(h.Version), interfaceMajor)
	}
	return Version(h.Version), nil
}

// Create implements DM. Without udev it also creates /dev/mapper/NAME.
func (c *Control) Create(ctx context.Context, name, uuid string) (Info, error) {
	h, _, err := ioctl(c.f, unix.DM_DEV_CREATE, header{Name: name, UUID: uuid}, nil)
	if errors.Is(err, unix.EBUSY) {
		// The kernel says EBUSY when the name or uuid is taken.
		return Info{}, fmt.Errorf("create %s: %w: name or uuid %q taken (%w)", name, ErrExists, uuid, err)
	}
	if err != nil {
		return Info{}, wrapErr("create", name, err)
	}
	info := infoFromHeader(h)
	if c.opts.Udev == UdevOff {
		if err := makeNode(c.opts.MapperDir, info); err != nil {
			return info, err
		}
	}
	return info, nil
}

// Load implements DM.
func (c *Control) Load(ctx context.Context, name string, table []Target) error {
	payload, err := encodeTargets(table)
	if err != nil {
		return fmt.Errorf("load table %s: %w", name, err)
	}
	_, _, err = c.do("load table", name, unix.DM_TABLE_LOAD, header{Name: name, TargetCount: uint32(len(table))}, payload)
	return err
}

// Suspend implements DM.
func (c *Control) Suspend(ctx context.Context, name string) error {
	_, _, err := c.do("suspend", name, unix.DM_DEV_SUSPEND, header{Name: name, Flags: flagSuspend}, nil)
	return err
}

// SuspendWith implements DM.
func (c *Control) SuspendWith(ctx context.Context, name string, o SuspendOptions) error {
	flags := uint32(flagSuspend)
	if o.NoFlush {
		flags |= flagNoFlush
	}
	if o.NoLockFS {
		flags |= flagSkipLockFS
	}
	_, _, err := c.do("suspend", name, unix.DM_DEV_SUSPEND, header{Name: name, Flags: flags}, nil)
	return err
}

// Resume implements DM. With udev it waits for udev to create the node.
func (c *Control) Resume(ctx context.Context, name string) (Info, error) {
	var l *ueventListener
	if c.opts.Udev == UdevOn {
		l, _ = listenUevents() // without a listener the wait polls
		if l != nil {
			defer l.Close()
		}
	}
	h, _, err := c.do("resume", name, unix.DM_DEV_SUSPEND, header{Name: name}, nil)
	if err != nil {
		return Info{}, err
	}
	info := infoFromHeader(h)
	if c.opts.Udev == UdevOn {
		if err := waitNode(ctx, c.opts, info, l); err != nil {
			return info, err
		}
	}
	return info, nil
}

// Remove implements DM. It retries briefly while the device is busy (udev
// may hold it open for a moment after a change).
func (c *Control) Remove(ctx context.Context, name string) error {
	var err error
	for try := 0; try < 10; try++ {
		_, _, err = c.do("remove", name, unix.DM_DEV_REMOVE, header{Name: name}, nil)
		if !errors.Is(err, ErrBusy) {
			break
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return err
	}
	if c.opts.Udev == UdevOff {
		return removeNode(c.opts.MapperDir, name)
	}
	return nil
}

// Info implements DM.
func (c *Control) Info(ctx context.Context, name string) (Info, error) {
	h, _, err := c.do("info", name, unix.DM_DEV_STATUS, header{Name: name}, nil)
	if err != nil {
		return Info{}, err
	}
	return infoFromHeader(h), nil
}

func (c *Control) tableStatus(op, name string, flags uint32) (Info, []Target, error) {
	h, data, err := c.do(op, name, unix.DM_TABLE_STATUS, header{Name: name, Flags: flags}, nil)
	if err != nil {
		return Info{}, nil, err
	}
	ts, err := decodeTargets(data, h.TargetCount)
	if err != nil {
		return Info{}, nil, fmt.Errorf("%s %s: %w", op, name, err)
	}
	return infoFromHeader(h), ts, nil
}

// Table implements DM.
func (c *Control) Table(ctx context.Context, name string) (Info, []Target, error) {
	return c.tableStatus("table", name, flagStatusTable)
}

// Status implements DM.
func (c *Control) Status(ctx context.Context, name string) (Info, []Target, error) {
	return c.tableStatus("status", name, 0)
}

// List implements DM.
func (c *Control) List(ctx context.Context) ([]DeviceName, error) {
	_, data, err := c.do("list devices", "", unix.DM_LIST_DEVICES, header{}, nil)
	if err != nil {
		return nil, err
	}
	ds, err := decodeNameList(data)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return ds, nil
}

// Wait implements DM. It arms poll on a private control fd
// (DM_DEV_ARM_POLL) and polls, so ctx can cancel it; once the event
// number moved it issues DM_DEV_WAIT, which then returns at once with the
// status. On kernels without ARM_POLL it blocks in DM_DEV_WAIT.
func (c *Control) Wait(ctx context.Context, name string, eventNr uint32) (Info, []Target, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return Info{}, nil, fmt.Errorf("wait %s: %w", name, err)
	}
	defer f.Close()
	for {
		_, _, armErr := ioctl(f, unix.DM_DEV_ARM_POLL, header{}, nil)
		info, err := c.Info(ctx, name)
		if err != nil {
			return Info{}, nil, err
		}
		if info.EventNr != eventNr || armErr != nil {
			break
		}
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 250); err != nil && !errors.Is(err, unix.EINTR) {
			return Info{}, nil, fmt.Errorf("wait %s: poll %s: %w", name, ControlPath, err)
		}
		if err := ctx.Err(); err != nil {
			return Info{}, nil, fmt.Errorf("wait %s: %w", name, err)
		}
	}
	h, data, err := ioctl(f, unix.DM_DEV_WAIT, header{Name: name, EventNr: eventNr}, nil)
	if err != nil {
		return Info{}, nil, wrapErr("wait", name, err)
	}
	ts, err := decodeTargets(data, h.TargetCount)
	if err != nil {
		return Info{}, nil, fmt.Errorf("wait %s: %w", name, err)
	}
	return infoFromHeader(h), ts, nil
}

// Message implements DM.
func (c *Control) Message(ctx context.Context, name string, sector uint64, msg string) (string, error) {
	payload, err := encodeMessage(sector, msg)
	if err != nil {
		return "", fmt.Errorf("message %s: %w", name, err)
	}
	h, data, err := c.do("message", name, unix.DM_TARGET_MSG, header{Name: name}, payload)
	if err != nil {
		return "", err
	}
	if h.Flags&flagDataOut != 0 {
		return cstring(data), nil
	}
	return "", nil
}
