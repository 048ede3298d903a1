package directio

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

var errNoDirect = errors.New("O_DIRECT not supported")

func openDirect(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) {
		return nil, errNoDirect
	}
	return f, err
}
