//go:build !linux

package dmtarget

import "fmt"

// Control is the real DM on Linux; elsewhere Open always fails.
type Control struct{ DM }

// Open fails: device-mapper exists only on Linux.
func Open(opts Options) (*Control, error) {
	return nil, fmt.Errorf("open device-mapper: %w on this OS (Linux only)", ErrUnsupported)
}

// Close does nothing.
func (c *Control) Close() error { return nil }
