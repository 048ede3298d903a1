//go:build !linux

package logd

import (
	"fmt"
	"runtime"
)

// DialConnector is only available on Linux: dm-log-userspace is a Linux
// device-mapper module.
func DialConnector() (Conn, error) {
	return nil, fmt.Errorf("netlink connector not implemented on %s/%s", runtime.GOOS, runtime.GOARCH)
}
