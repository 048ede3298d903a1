package dmtargettest

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/dmsync/dmsync/dmtarget"
)

// Host is a fake dmtarget.Host. Block devices are declared in Sizes;
// cryptsetup open/close are emulated on the Fake DM (a crypt device over
// the named /dev/mapper device), so volume listing and removal see them.
type Host struct {
	mu    sync.Mutex
	DM    *Fake
	Sizes map[string]uint64 // block device path -> bytes
	InUse map[string]string // path -> why it is in use
	Files map[string]bool   // other existing paths (key files, sockets)
	runs  []string
	fail  map[string]error
}

var _ dmtarget.Host = (*Host)(nil)

// NewHost returns a fake host over dm.
func NewHost(dm *Fake) *Host {
	return &Host{DM: dm, Sizes: map[string]uint64{}, InUse: map[string]string{}, Files: map[string]bool{}, fail: map[string]error{}}
}

// FailRun makes the next run of "PROGRAM SUBCOMMAND" (e.g. "cryptsetup
// open") fail with err.
func (h *Host) FailRun(key string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail[key] = err
}

// Runs returns the commands run so far.
func (h *Host) Runs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.runs...)
}

// DeviceSize implements dmtarget.Host.
func (h *Host) DeviceSize(path string) (uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, ok := h.Sizes[path]
	if !ok {
		return 0, fmt.Errorf("%w: device %s does not exist: check the path (lsblk lists block devices)", dmtarget.ErrInvalid, path)
	}
	return n, nil
}

// CheckUnused implements dmtarget.Host.
func (h *Host) CheckUnused(path string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if why, ok := h.InUse[path]; ok {
		return fmt.Errorf("%w: %s is in use: %s", dmtarget.ErrInvalid, path, why)
	}
	return nil
}

// Exists implements dmtarget.Host.
func (h *Host) Exists(path string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, dev := h.Sizes[path]
	return h.Files[path] || dev
}

// Run implements dmtarget.Host: it records the command and emulates
// cryptsetup luksFormat (nothing), open and close.
func (h *Host) Run(ctx context.Context, argv ...string) error {
	h.mu.Lock()
	h.runs = append(h.runs, strings.Join(argv, " "))
	key := strings.Join(argv[:min(2, len(argv))], " ")
	err, failing := h.fail[key]
	delete(h.fail, key)
	h.mu.Unlock()
	if failing {
		return fmt.Errorf("fake %s: %w", key, err)
	}
	if len(argv) < 2 || !strings.HasSuffix(argv[0], "cryptsetup") {
		return nil
	}
	switch argv[1] {
	case "open":
		if len(argv) < 4 {
			return fmt.Errorf("fake cryptsetup open: want ... DEVICE NAME")
		}
		lower, name := argv[len(argv)-2], argv[len(argv)-1]
		kind := "PLAIN"
		for i, a := range argv {
			if a == "--type" && i+1 < len(argv) {
				kind = strings.ToUpper(argv[i+1])
			}
		}
		info, _, err := h.DM.Table(ctx, strings.TrimPrefix(lower, "/dev/mapper/"))
		if err != nil {
			return fmt.Errorf("fake cryptsetup open: %w", err)
		}
		if _, err := h.DM.Create(ctx, name, "CRYPT-"+kind+"-fake-"+name); err != nil {
			return err
		}
		params := fmt.Sprintf("aes-xts-plain64 :64:logon:cryptsetup:fake 0 %s 32768", info.DevT())
		if err := h.DM.Load(ctx, name, []dmtarget.Target{{Start: 0, Length: 2048, Type: "crypt", Params: params}}); err != nil {
			return err
		}
		_, err = h.DM.Resume(ctx, name)
		return err
	case "close":
		return h.DM.Remove(ctx, argv[len(argv)-1])
	}
	return nil
}
