// Package directio reads and writes block devices (and files) with
// O_DIRECT, bypassing the page cache.
//
// dmsync reads a volume's bytes below dm-crypt, from the mirror device.
// dm-crypt writes to that device with bios, not through its page cache, so a
// buffered read of the mirror device may return stale cached pages: every
// read that decides what a peer receives must be a direct read.
package directio

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"
)

// Align is the alignment of O_DIRECT offsets, lengths and buffers.
const Align = 4096

// File is a device or file opened for direct I/O. Its ReadAt and WriteAt
// accept any offset and length: unaligned requests go through an aligned
// bounce buffer (an unaligned write is a read-modify-write and must not
// race with other writers of the same blocks).
type File struct {
	f      *os.File
	path   string
	direct bool
}

// Open opens path for direct reads (and writes if write is set). Where the
// file system refuses O_DIRECT (tmpfs), it falls back to buffered I/O and
// Direct reports false.
func Open(path string, write bool) (*File, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := openDirect(path, flag)
	if err == nil {
		return &File{f: f, path: path, direct: true}, nil
	}
	if !errors.Is(err, errNoDirect) {
		return nil, err
	}
	f, err = os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	return &File{f: f, path: path}, nil
}

// Direct reports whether the file bypasses the page cache.
func (d *File) Direct() bool { return d.direct }

// Name returns the path the file was opened with.
func (d *File) Name() string { return d.path }

// Size returns the size of the device or file in bytes.
func (d *File) Size() (int64, error) {
	n, err := d.f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", d.path, err)
	}
	return n, nil
}

// Buffer returns a zeroed n-byte buffer aligned for direct I/O.
func Buffer(n int) []byte {
	b := make([]byte, n+Align)
	off := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % Align); r != 0 {
		off = Align - r
	}
	return b[off : off+n : off+n]
}

func aligned(b []byte, off int64) bool {
	return off%Align == 0 && len(b)%Align == 0 &&
		(len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align == 0)
}

// ReadAt reads len(p) bytes at off. It returns io.EOF (with the bytes
// read) when the file ends first.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if !d.direct || aligned(p, off) {
		return d.f.ReadAt(p, off)
	}
	start := off / Align * Align
	end := (off + int64(len(p)) + Align - 1) / Align * Align
	buf := Buffer(int(end - start))
	n, err := d.f.ReadAt(buf, start)
	skip := int(off - start)
	if n <= skip {
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	c := copy(p, buf[skip:n])
	if c < len(p) && err == nil {
		err = io.EOF
	}
	if c == len(p) {
		err = nil
	}
	return c, err
}

// WriteAt writes p at off.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if !d.direct || aligned(p, off) {
		return d.f.WriteAt(p, off)
	}
	start := off / Align * Align
	end := (off + int64(len(p)) + Align - 1) / Align * Align
	buf := Buffer(int(end - start))
	// Read the partial blocks at both ends before overwriting them.
	if n, err := d.f.ReadAt(buf, start); err != nil && !(errors.Is(err, io.EOF) && n >= 0) {
		return 0, fmt.Errorf("write %s at %d: read-modify-write: %w", d.path, off, err)
	}
	copy(buf[off-start:], p)
	if _, err := d.f.WriteAt(buf, start); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Sync flushes the device's write cache (fsync).
func (d *File) Sync() error { return d.f.Sync() }

// Close closes the file.
func (d *File) Close() error { return d.f.Close() }
