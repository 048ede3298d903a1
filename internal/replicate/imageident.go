package replicate

// A replica's index is bound to its image and to this node. The receiver
// trusts its index (package pebble, 0x30..0x33) only for the image it
// wrote it into, on the node that wrote it: re-pointing a received volume
// at a new or different image, or a replica store copied from another
// node, would otherwise make an empty or foreign image look replicated
// and verify equal.
//
// The identity of an image (pebble.ImageIdent):
//   - A regular file: its device and inode, its size, its creation time
//     (statx birth time, where the file system records one) and a random
//     replica id in the xattr user.dmsync.replica, set when the replica is
//     bound (where the file system takes user xattrs). A new file at the
//     same path (a new inode, or a reused inode with another birth time and
//     no replica id), a copy of the file, or a file cut to another size is
//     another image.
//   - A block device: its size and a stable id from sysfs, the first that
//     exists of: dm/uuid, else dm/name (device-mapper), md/uuid (md raid),
//     loop/backing_file (loop), wwid or device/wwid (SCSI, NVMe), serial or
//     device/serial (virtio, ATA); for a partition, its disk's id plus the
//     partition number and start sector. With a stable id the device's
//     major:minor may change (dm minors do, across boots). A device with
//     none (e.g. a virtio disk given no serial) is known by major:minor and
//     size alone, so another disk of the same size at the same number goes
//     unnoticed: give such disks a serial.
//   - The node: the id of this node (internal/identity) is part of the
//     identity, so a store copied from another node is not trusted.
//
// What the identity cannot see: the image's bytes. A file rewritten in
// place keeps its identity; finding that is scrub's job (dmsync verify).
//
// A new or changed image is treated as empty: the volume's whole replica
// state (meta, index, markers) is dropped before the receiver opens it, the
// reason is logged at WARN and shown in the receiver's problems, and the
// next batches rebuild the index as for a new replica. A store written by
// a dmsyncd from before images were bound holds an index and no identity:
// it is bound to the image it is opened with, once, and logged.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/pebble"
)

// replicaXattr holds a replica file's random replica id.
const replicaXattr = "user.dmsync.replica"

// Image kinds in pebble.ImageIdent.Kind.
const (
	kindFile  = "file"
	kindBlock = "block"
)

// sysfsRoot is where block devices' sysfs directories are read.
var sysfsRoot = "/sys"

// imageIdentOf returns the identity of the open image f for node, reading
// (never setting) its replica id.
func imageIdentOf(f *os.File, node string) (pebble.ImageIdent, error) {
	var stx unix.Statx_t
	var xerr, serr error
	var tag string
	rc, err := f.SyscallConn()
	if err != nil {
		return pebble.ImageIdent{}, err
	}
	err = rc.Control(func(fd uintptr) {
		serr = unix.Statx(int(fd), "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &stx)
		if serr != nil || stx.Mode&unix.S_IFMT != unix.S_IFREG {
			return
		}
		tag, xerr = readReplicaID(int(fd))
	})
	if err == nil {
		err = serr
	}
	if err == nil {
		err = xerr
	}
	if err != nil {
		return pebble.ImageIdent{}, fmt.Errorf("identify image %s: %w", f.Name(), err)
	}
	id := pebble.ImageIdent{Node: node}
	switch stx.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		id.Kind, id.Tag = kindFile, tag
		id.Dev, id.Ino, id.Size = unix.Mkdev(stx.Dev_major, stx.Dev_minor), stx.Ino, stx.Size
		if stx.Mask&unix.STATX_BTIME != 0 {
			id.Birth = time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec)).UnixNano()
		}
	case unix.S_IFBLK:
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return pebble.ImageIdent{}, fmt.Errorf("identify image %s: size: %w", f.Name(), err)
		}
		id.Kind, id.Size = kindBlock, uint64(end)
		id.Dev = unix.Mkdev(stx.Rdev_major, stx.Rdev_minor)
		id.Tag = blockTag(sysfsRoot, stx.Rdev_major, stx.Rdev_minor)
	default:
		return pebble.ImageIdent{}, fmt.Errorf("identify image %s: not a regular file or block device", f.Name())
	}
	return id, nil
}

// readReplicaID returns "replica:ID" from a file's xattr, or "" if it has
// none or the file system keeps no user xattrs.
func readReplicaID(fd int) (string, error) {
	buf := make([]byte, 128)
	n, err := unix.Fgetxattr(fd, replicaXattr, buf)
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.ERANGE):
		return "", nil // ERANGE: not one we wrote
	case err != nil:
		return "", fmt.Errorf("read xattr %s: %w", replicaXattr, err)
	}
	return "replica:" + string(buf[:n]), nil
}

// newReplicaID gives the file f a new random replica id and returns its
// tag, or "" where the file system keeps no user xattrs.
func newReplicaID(f *os.File) (string, error) {
	var b [16]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	rc, err := f.SyscallConn()
	if err != nil {
		return "", err
	}
	var xerr error
	if err := rc.Control(func(fd uintptr) { xerr = unix.Fsetxattr(int(fd), replicaXattr, []byte(id), 0) }); err != nil {
		return "", err
	}
	if errors.Is(xerr, unix.ENOTSUP) {
		return "", nil
	}
	if xerr != nil {
		return "", fmt.Errorf("image %s: set xattr %s: %w", f.Name(), replicaXattr, xerr)
	}
	return "replica:" + id, nil
}

// blockTag returns a stable id of block device major:minor from sysfs
// (see the comment at the top of the file), or "" if it has none.
func blockTag(sys string, major, minor uint32) string {
	dir := filepath.Join(sys, "dev", "block", fmt.Sprintf("%d:%d", major, minor))
	if part := readSys(dir, "partition"); part != "" {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return ""
		}
		disk := diskTag(filepath.Dir(real))
		if disk == "" {
			return ""
		}
		return disk + "/part" + part + "@" + readSys(dir, "start")
	}
	return diskTag(dir)
}

func diskTag(dir string) string {
	for _, c := range []struct{ prefix, file string }{
		{"dm-uuid", "dm/uuid"}, {"dm-name", "dm/name"}, {"md-uuid", "md/uuid"}, {"loop", "loop/backing_file"},
		{"wwid", "wwid"}, {"wwid", "device/wwid"}, {"serial", "serial"}, {"serial", "device/serial"},
	} {
		if v := readSys(dir, c.file); v != "" {
			return c.prefix + ":" + v
		}
	}
	return ""
}

// readSys returns a sysfs attribute without surrounding space, "" if it is
// missing or empty.
func readSys(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// identChange says why the image now is not the one the store's record
// was describes, or "" if it is the same image on the same node.
func identChange(was, now pebble.ImageIdent) string {
	switch {
	case was.Node != now.Node:
		return fmt.Sprintf("the replica store was written by node %s, and this is node %s (a state directory copied from another node)", was.Node, now.Node)
	case was.Kind != now.Kind:
		return fmt.Sprintf("the image was a %s and is now a %s", kindName(was.Kind), kindName(now.Kind))
	case was.Tag != now.Tag:
		return fmt.Sprintf("the image's id is %s, the store's index describes %s (another %s)", tagName(now.Tag), tagName(was.Tag), kindName(now.Kind))
	case was.Kind == kindFile && (was.Dev != now.Dev || was.Ino != now.Ino):
		return fmt.Sprintf("the image is file %s inode %d, the store's index describes %s inode %d (another file)", devName(now.Dev), now.Ino, devName(was.Dev), was.Ino)
	case was.Kind == kindFile && was.Birth != 0 && was.Birth != now.Birth:
		return fmt.Sprintf("the image file was created %s, the store's index describes one created %s (another file)", birthName(now.Birth), birthName(was.Birth))
	case was.Kind == kindBlock && was.Tag == "" && was.Dev != now.Dev:
		return fmt.Sprintf("the image is device %s, the store's index describes device %s (another device)", devName(now.Dev), devName(was.Dev))
	case was.Size != now.Size:
		return fmt.Sprintf("the image holds %d bytes, the store's index describes %d", now.Size, was.Size)
	}
	return ""
}

func kindName(k string) string {
	if k == kindBlock {
		return "block device"
	}
	return k
}

func tagName(t string) string {
	if t == "" {
		return "none"
	}
	return strconv.Quote(t)
}

func devName(d uint64) string { return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d)) }

func birthName(n int64) string { return time.Unix(0, n).UTC().Format(time.RFC3339Nano) }

// bindImage checks that the image f of receive r is the one the store's
// index for r.Volume describes, on this node, before the receiver opens it.
// A new or changed image is treated as empty (its replica state is
// dropped) and then bound.
func (m *Manager) bindImage(r Receive, f *os.File) error {
	st := m.opts.Store
	now, err := imageIdentOf(f, m.opts.Self.ID)
	if err != nil {
		return err
	}
	was, bound, err := st.ImageIdent(r.Volume)
	if err != nil {
		return err
	}
	if bound {
		why := identChange(was, now)
		if why == "" {
			if was != now { // the same device under a new major:minor
				return st.SetImageIdent(r.Volume, now)
			}
			return nil
		}
		m.log.Warn("replica image changed: its index is dropped and the replica counts as empty",
			"volume", r.Volume, "image", r.Image, "reason", why,
			"fix", fmt.Sprintf("run `dmsync resync` of the volume on its sender (%s) to send it all again; until then verify reports differences", r.From))
		if err := st.DropReplica(r.Volume); err != nil {
			return err
		}
		m.probs.reset(r.Volume, why)
	} else if held, err := st.HasReplica(r.Volume); err != nil {
		return err
	} else if held {
		m.log.Info("binding a replica index written before images were bound to its image", "volume", r.Volume, "image", r.Image)
	}
	if now.Kind == kindFile {
		if now.Tag, err = newReplicaID(f); err != nil {
			return err
		}
	}
	return st.SetImageIdent(r.Volume, now)
}
