//go:build linux

package dmtarget

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SystemHost is the real Host.
type SystemHost struct {
	// Env is added to the environment of programs Run starts (e.g.
	// DM_DISABLE_UDEV=1 in a guest without udev).
	Env []string
}

var _ Host = SystemHost{}

// DeviceSize implements Host (BLKGETSIZE64).
func (SystemHost) DeviceSize(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("%w: device %s does not exist: check the path (lsblk lists block devices)", ErrInvalid, path)
		}
		return 0, fmt.Errorf("open device %s: %w", path, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("%w: %s is not a block device: give a disk, partition or loop device (losetup -f --show FILE makes one from a file)", ErrInvalid, path)
	}
	var size uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); errno != 0 {
		return 0, fmt.Errorf("size of %s (BLKGETSIZE64): %w", path, errno)
	}
	return size, nil
}

// CheckUnused implements Host: the device (or a partition of it) must not
// be mounted (/proc/self/mountinfo), have holders (/sys/dev/block/M:m/
// holders: dm, md, ...) or be open exclusively (O_EXCL open fails with
// EBUSY: swap, mounted, or another program).
func (SystemHost) CheckUnused(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	devs := []string{fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))}
	sys := "/sys/dev/block/" + devs[0]
	// Partitions of a whole disk count too.
	if ents, err := os.ReadDir(sys); err == nil {
		for _, e := range ents {
			if b, err := os.ReadFile(filepath.Join(sys, e.Name(), "dev")); err == nil {
				if _, err := os.Stat(filepath.Join(sys, e.Name(), "partition")); err == nil {
					devs = append(devs, strings.TrimSpace(string(b)))
				}
			}
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		if dev, mnt, ok := mountedIn(mi, devs); ok {
			return fmt.Errorf("%w: %s is in use: device %s is mounted at %s: unmount it first (umount %s)", ErrInvalid, path, dev, mnt, mnt)
		}
	}
	for _, d := range devs {
		ents, _ := os.ReadDir("/sys/dev/block/" + d + "/holders")
		if len(ents) > 0 {
			var hs []string
			for _, e := range ents {
				h := e.Name()
				if b, err := os.ReadFile("/sys/class/block/" + h + "/dm/name"); err == nil {
					h += " (" + strings.TrimSpace(string(b)) + ")"
				}
				hs = append(hs, h)
			}
			return fmt.Errorf("%w: %s is in use: device %s is held by %s: remove that device first (dmsetup remove, mdadm --stop, ...)", ErrInvalid, path, d, strings.Join(hs, ", "))
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: %s is in use: another program has it open exclusively (swap, a filesystem, a RAID or LVM): stop that user first (check lsblk, swapon --show)", ErrInvalid, path)
		}
		return fmt.Errorf("open %s exclusively: %w", path, err)
	}
	unix.Close(fd)
	return nil
}

// mountedIn finds the first of devs ("major:minor") that mountinfo shows
// mounted, and its mount point.
func mountedIn(mountinfo []byte, devs []string) (dev, mnt string, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		for _, d := range devs {
			if f[2] == d {
				return d, f[4], true
			}
		}
	}
	return "", "", false
}

// Exists implements Host.
func (SystemHost) Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Run implements Host.
func (h SystemHost) Run(ctx context.Context, argv ...string) error {
	if len(argv) == 0 {
		return errors.New("run: no program")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), h.Env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("%s is not installed: install it (apt-get install cryptsetup-bin)", argv[0])
		}
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
