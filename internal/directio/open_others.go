//go:build !linux

package directio

import (
	"errors"
	"os"
)

var errNoDirect = errors.New("O_DIRECT not supported")

func openDirect(string, int) (*os.File, error) { return nil, errNoDirect }
