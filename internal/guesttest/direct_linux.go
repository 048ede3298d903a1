package guesttest

import (
	"fmt"
	"os"

	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/internal/directio"
)

// AlignedBuffer returns a zeroed n-byte buffer aligned for O_DIRECT.
func AlignedBuffer(n int) []byte { return directio.Buffer(n) }

// WriteDirect writes data at off to the device at path with O_DIRECT and
// fsyncs it. off and len(data) must be multiples of 4096.
func WriteDirect(path string, off int64, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return fmt.Errorf("open %s O_DIRECT: %w", path, err)
	}
	defer f.Close()
	buf := AlignedBuffer(len(data))
	copy(buf, data)
	if _, err := f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("write %s at %d: %w", path, off, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// ReadDirect reads n bytes at off from the device at path with O_DIRECT,
// bypassing the page cache (so two legs of a mirror are compared as they
// are on disk). off and n must be multiples of 4096.
func ReadDirect(path string, off int64, n int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s O_DIRECT: %w", path, err)
	}
	defer f.Close()
	buf := AlignedBuffer(n)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("read %s at %d: %w", path, off, err)
	}
	return buf, nil
}

// DeviceSize returns the size in bytes of a block device (or file).
func DeviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.Seek(0, 2)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", path, err)
	}
	return n, nil
}

// Wipe makes the whole device read back as zeros (BLKDISCARD, which the
// harness's disks turn into holes; BLKZEROOUT where discard is not
// supported). Guest disks are shared by every test of a boot: a test that
// relies on blank disks (a mirror created with nosync) wipes them first.
func Wipe(path string) error {
	size, err := DeviceSize(path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", path, err)
	}
	defer f.Close()
	rng := [2]uint64{0, uint64(size)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKDISCARD, uintptr(unsafe.Pointer(&rng))); e != 0 {
		if _, _, e2 := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&rng))); e2 != 0 {
			return fmt.Errorf("wipe %s: BLKDISCARD: %v, BLKZEROOUT: %v", path, e, e2)
		}
	}
	return nil
}

// WipeDisk wipes the guest's i-th scratch disk and returns its path.
func (g *G) WipeDisk(i int) string {
	g.t.Helper()
	p := g.Disk(i)
	if err := Wipe(p); err != nil {
		g.t.Fatal(err)
	}
	return p
}
