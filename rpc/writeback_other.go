//go:build !linux

package rpc

// startWriteback does nothing where there is no sync_file_range(2).
func startWriteback(img Image, off uint64, n int) error { return nil }
