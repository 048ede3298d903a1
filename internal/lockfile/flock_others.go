//go:build !unix

package lockfile

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

var errWouldBlock = errors.New("would block")

func flock(*os.File) error {
	return fmt.Errorf("file locking not implemented on %s", runtime.GOOS)
}
