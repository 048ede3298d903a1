package rpc

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing [off, off+n) of img back
// to its device now, without waiting (sync_file_range(2) with
// SYNC_FILE_RANGE_WRITE), so that the batch's fsync finds the range on its
// way to disk rather than still dirty. It does nothing for an Image that is
// not an *os.File. Writeback errors are left to the fsync, which reports
// them: SYNC_FILE_RANGE_WRITE neither waits nor consumes them.
func startWriteback(img Image, off uint64, n int) error {
	f, ok := img.(*os.File)
	if !ok {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SyncFileRange(int(fd), int64(off), int64(n), unix.SYNC_FILE_RANGE_WRITE)
	}); err != nil {
		return nil
	}
	return serr
}
