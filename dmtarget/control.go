package dmtarget

import (
	"log/slog"
	"os"
	"time"
)

// ControlPath is the device-mapper control node the ioctls go to.
const ControlPath = "/dev/mapper/control"

// Options configure Open. The zero value works.
type Options struct {
	// Logger receives warnings (e.g. a device node udev did not create).
	// Nil discards them.
	Logger *slog.Logger
	// Udev selects who creates /dev/mapper/NAME: UdevAuto (default)
	// detects udev, UdevOff makes this package create and remove the nodes
	// with mknod, UdevOn waits for udev to create them.
	Udev UdevMode
	// NodeTimeout bounds the wait for udev to create a node before this
	// package creates it itself. Default 10s.
	NodeTimeout time.Duration
	// MapperDir is where device nodes live. Default /dev/mapper.
	MapperDir string
}

// UdevMode says who manages device nodes.
type UdevMode int

// UdevMode values.
const (
	UdevAuto UdevMode = iota
	UdevOff
	UdevOn
)

// EnsureDefaults fills in defaults and resolves UdevAuto.
func (o *Options) EnsureDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = 10 * time.Second
	}
	if o.MapperDir == "" {
		o.MapperDir = "/dev/mapper"
	}
	if o.Udev == UdevAuto {
		if UdevRunning() {
			o.Udev = UdevOn
		} else {
			o.Udev = UdevOff
		}
	}
}

// UdevRunning reports whether udev manages device nodes here: false when
// DM_DISABLE_UDEV=1 is set (as for dmsetup) or /run/udev/control is
// missing (guests, containers).
func UdevRunning() bool {
	if os.Getenv("DM_DISABLE_UDEV") == "1" {
		return false
	}
	_, err := os.Stat("/run/udev/control")
	return err == nil
}
