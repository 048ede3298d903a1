package replicate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/internal/imagefile"
	"github.com/dmsync/dmsync/rpc"
)

// Receive lets peer r.From send volume r.Volume into r.Image; see
// ReceiveVolume.
func (m *Manager) Receive(r Receive) error {
	_, _, err := m.ReceiveVolume(r, false)
	return err
}

// ReceiveVolume lets peer r.From send volume r.Volume into r.Image. Everything
// is checked before the configuration is saved: the image (an existing
// block device or regular file, or a file to create outside /dev), its
// size, that no other receive uses it, and what the store already holds
// for the volume. An existing receive is changed only with force, and
// then only its sender (a node whose key was rotated); a receive into
// another image is `receive remove` first. It reports the volume size the
// replica takes and whether an existing receive changed.
func (m *Manager) ReceiveVolume(r Receive, force bool) (uint64, bool, error) {
	if m.opts.Self == nil {
		return 0, false, ErrNoIdentity
	}
	if m.opts.Listen == "" {
		return 0, false, fmt.Errorf("%w: dmsyncd does not listen for peers: add --listen HOST:PORT to its command line (the unit's ExecStart)", ErrInvalid)
	}
	if err := checkName("volume name", r.Volume); err != nil {
		return 0, false, err
	}
	id, err := identity.ParseID(r.From)
	if err != nil {
		return 0, false, admin.Errorf(admin.ErrInvalid, "sender %q is not a node id: copy it from `dmsync id` on the sender", r.From)
	}
	r.From = id
	m.mu.Lock()
	defer m.mu.Unlock()
	var old *Receive
	for i := range m.cfg.Receives {
		if m.cfg.Receives[i].Volume == r.Volume {
			old = &m.cfg.Receives[i]
		}
	}
	if old != nil {
		if r.Size == 0 {
			r.Size = old.Size
		}
		if *old == r {
			return r.Size, false, nil
		}
		if !force {
			return 0, false, admin.Errorf(admin.ErrExists, "%s is already received from %s into %s (%d bytes): to change its sender add --force; to change anything else `dmsync receive remove %s` first",
				r.Volume, old.From, old.Image, old.Size, r.Volume)
		}
		if filepath.Clean(r.Image) != old.Image || r.Size != old.Size {
			return 0, false, admin.Errorf(admin.ErrInvalid, "%s: --force changes only the sender; its replica is in %s (%d bytes): `dmsync receive remove %s` to receive it elsewhere",
				r.Volume, old.Image, old.Size, r.Volume)
		}
	}
	img, err := checkImage(r.Image, r.Size)
	if err != nil {
		return 0, false, err
	}
	r.Image = img.path
	if r.Size == 0 {
		r.Size = img.size
	}
	for _, o := range m.cfg.Receives {
		if o.Volume == r.Volume {
			continue
		}
		if o.Image == r.Image || sameFile(o.Image, img.info) {
			return 0, false, admin.Errorf(admin.ErrBusy, "image %s already holds the replica of %s: give %s its own device or file", r.Image, o.Volume, r.Volume)
		}
	}
	if meta, ok, err := m.opts.Store.Meta(r.Volume); err != nil {
		return 0, false, fmt.Errorf("receive %s: read the store: %w", r.Volume, err)
	} else if ok && meta.Size != r.Size {
		return 0, false, admin.Errorf(admin.ErrInvalid, "a replica named %s of %d bytes was received here before: give --size %d, or receive this volume under a new name (`dmsync replicate VOLUME --to PEER --as NEW` on the sender)",
			r.Volume, meta.Size, meta.Size)
	}
	if img.create {
		if err := createImage(r.Image, r.Size); err != nil {
			return 0, false, err
		}
	}
	err = m.change(func(c *Config) error {
		c.Receives = slices.DeleteFunc(c.Receives, func(q Receive) bool { return q.Volume == r.Volume })
		c.Receives = append(c.Receives, r)
		return nil
	})
	if err != nil {
		if img.create {
			os.Remove(r.Image)
		}
		return 0, false, err
	}
	gen := m.restartReceiverLocked()
	if m.recv != nil {
		// Return once the receiver serves it, or with why it cannot.
		m.mu.Unlock()
		waitReceiver(gen)
		m.mu.Lock()
		if err := m.probs.imageErr(r.Volume); err != nil {
			return r.Size, old != nil, fmt.Errorf("receive %s is saved but cannot be served: %w; fix that or `dmsync receive remove %s`", r.Volume, err, r.Volume)
		}
	}
	return r.Size, old != nil, nil
}

// checkName refuses a name a peer or a log could not carry.
func checkName(what, name string) error {
	if name == "" || strings.ContainsAny(name, " \t\n/\x00") || len(name) > 128 {
		return admin.Errorf(admin.ErrInvalid, "%s %q: want one word of at most 128 bytes without '/'", what, name)
	}
	return nil
}

// image is a checked replica image.
type image struct {
	path   string
	size   uint64
	info   fs.FileInfo // nil when it is to be created
	create bool
}

// checkImage checks a replica image path without changing anything: an
// existing block device or regular file of at least size bytes (size 0:
// any), or a missing file whose directory exists, outside /dev, with a
// size to create it with.
func checkImage(path string, size uint64) (image, error) {
	if !filepath.IsAbs(path) {
		return image{}, admin.Errorf(admin.ErrInvalid, "image %q: give an absolute path", path)
	}
	path = filepath.Clean(path)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if path == "/dev" || strings.HasPrefix(path, "/dev/") {
			return image{}, admin.Errorf(admin.ErrInvalid, "image %s does not exist, and dmsync makes no files under /dev: check the device name (lsblk), or give a file elsewhere", path)
		}
		if size == 0 {
			return image{}, admin.Errorf(admin.ErrInvalid, "image %s does not exist: give its size (--size, the volume's size) to create it as a file", path)
		}
		if d, err := os.Stat(filepath.Dir(path)); err != nil || !d.IsDir() {
			return image{}, admin.Errorf(admin.ErrInvalid, "image %s: directory %s does not exist: create it first", path, filepath.Dir(path))
		}
		return image{path: path, size: size, create: true}, nil
	}
	if err != nil {
		return image{}, admin.Errorf(admin.ErrInvalid, "image %s: %v", path, err)
	}
	var n uint64
	switch {
	case fi.Mode().Type() == fs.ModeDevice: // a block device
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL, 0)
		if err != nil {
			if errors.Is(err, unix.EBUSY) {
				return image{}, admin.Errorf(admin.ErrBusy, "image %s is in use (mounted, or held by device-mapper or another program): give a device nothing uses", path)
			}
			return image{}, admin.Errorf(admin.ErrInvalid, "image %s: %v", path, err)
		}
		end, err := f.Seek(0, 2)
		f.Close()
		if err != nil {
			return image{}, fmt.Errorf("image %s: size: %w", path, err)
		}
		n = uint64(end)
	case fi.Mode().IsRegular():
		n = uint64(fi.Size())
	default:
		return image{}, admin.Errorf(admin.ErrInvalid, "image %s is a %s: give a block device or a regular file", path, kindOf(fi))
	}
	if size == 0 {
		size = n
	}
	if n < size {
		return image{}, admin.Errorf(admin.ErrInvalid, "image %s holds %d bytes, the volume needs %d: use a larger device or file", path, n, size)
	}
	if size == 0 {
		return image{}, admin.Errorf(admin.ErrInvalid, "image %s is empty: give --size to grow a file, or use a device", path)
	}
	return image{path: path, size: size, info: fi}, nil
}

func kindOf(fi fs.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case fi.IsDir():
		return "directory"
	case t == fs.ModeDevice|fs.ModeCharDevice:
		return "character device"
	case t == fs.ModeSymlink:
		return "symlink"
	}
	return "special file"
}

// sameFile reports whether path names the file fi describes (a second
// path to the same device or file).
func sameFile(path string, fi fs.FileInfo) bool {
	if fi == nil {
		return false
	}
	o, err := os.Stat(path)
	return err == nil && os.SameFile(o, fi)
}

// createImage creates a missing replica file of size bytes, its space
// allocated where the filesystem can (imagefile.Create).
func createImage(path string, size uint64) error {
	err := imagefile.Create(path, size)
	switch {
	case errors.Is(err, imagefile.ErrNoSpace):
		return admin.Errorf(admin.ErrInvalid, "%v: free space there, or give an image on a larger filesystem", err)
	case errors.Is(err, fs.ErrExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist):
		return admin.Errorf(admin.ErrInvalid, "create image %s: %v", path, err)
	}
	return err
}

// openImage opens a replica image for the receiver, after checking that
// the store's index for the volume describes this image on this node
// (imageident.go): a new or changed image is treated as empty.
func (m *Manager) openImage(r Receive) (*os.File, error) {
	f, err := os.OpenFile(r.Image, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("replica image of %s: %w", r.Volume, err)
	}
	if err := m.bindImage(r, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("replica image of %s: %w", r.Volume, err)
	}
	return f, nil
}

// restartReceiverLocked makes the receiver rebuild from the configuration.
func (m *Manager) restartReceiverLocked() <-chan struct{} {
	gen := m.recvGen
	select {
	case m.restart <- struct{}{}:
	default:
	}
	return gen
}

// servable returns the volumes the receiver can serve; each of the others
// is logged and its error kept for status, so that one bad receive never
// stops the others (or the daemon).
func (m *Manager) servable(vols []rpc.ReceiveVolume) []rpc.ReceiveVolume {
	if _, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: m.opts.Store, Log: m.log, Volumes: vols, StagingDir: m.stagingDir()}); err != nil {
		vols = slices.DeleteFunc(slices.Clone(vols), func(v rpc.ReceiveVolume) bool {
			_, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: m.opts.Store, Log: m.log, Volumes: []rpc.ReceiveVolume{v}, StagingDir: m.stagingDir()})
			if err != nil {
				m.log.Error("cannot receive volume", "volume", v.Name, "err", err)
				m.probs.image(v.Name, err)
			}
			return err != nil
		})
	}
	return vols
}

// ReceiveError reports why a configured receive is not served, or nil.
func (m *Manager) ReceiveError(volume string) error { return m.probs.imageErr(volume) }

// waitReceiver waits until the receiver was rebuilt after gen (or a few
// seconds: a receiver that does not run has nothing to stop).
func waitReceiver(gen <-chan struct{}) {
	select {
	case <-gen:
	case <-time.After(5 * time.Second):
	}
}

// stagingDirName is the directory, in the state directory, of the redo
// files of consistency points being received (rpc/point.go).
const stagingDirName = "replica-staging"

// stagingDir returns the staging directory, made if need be; "" if it
// cannot be made (the receiver then refuses points, and says so).
func (m *Manager) stagingDir() string {
	if m.opts.StateDir == "" {
		return ""
	}
	dir := filepath.Join(m.opts.StateDir, stagingDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		m.log.Error("cannot make the staging directory: consistency points are refused", "dir", dir, "err", err)
		return ""
	}
	return dir
}
