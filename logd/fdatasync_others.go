//go:build !linux

package logd

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
