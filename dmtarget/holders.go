package dmtarget

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Holder is a block device stacked directly on another one: an entry of
// the lower device's sysfs holders directory (dm-crypt, linear, md, ...).
type Holder struct {
	KName string // kernel name, e.g. "dm-3"
	Name  string // dm device name; "" if the holder is not a dm device
	UUID  string // dm uuid, e.g. "CRYPT-LUKS2-..."; "" if it has none
}

// KernelName returns the kernel name of the dm device with that minor
// number ("dm-<minor>"), the name sysfs lists it under.
func KernelName(minor uint32) string { return fmt.Sprintf("dm-%d", minor) }

// Holders lists the devices holding the block device whose kernel name is
// kname, from sysfs under sysRoot ("" is /sys):
// SYSROOT/class/block/KNAME/holders/*, with each holder's dm/name and
// dm/uuid. A device with no holders directory has none.
func Holders(sysRoot, kname string) ([]Holder, error) {
	if sysRoot == "" {
		sysRoot = "/sys"
	}
	block := filepath.Join(sysRoot, "class", "block")
	ents, err := os.ReadDir(filepath.Join(block, kname, "holders"))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(block, kname)); serr != nil {
			return nil, fmt.Errorf("holders of %s: no such block device in %s: %w", kname, block, serr)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("holders of %s: %w", kname, err)
	}
	out := make([]Holder, 0, len(ents))
	for _, e := range ents {
		h := Holder{KName: e.Name()}
		if b, err := os.ReadFile(filepath.Join(block, e.Name(), "dm", "name")); err == nil {
			h.Name = strings.TrimSpace(string(b))
		}
		if b, err := os.ReadFile(filepath.Join(block, e.Name(), "dm", "uuid")); err == nil {
			h.UUID = strings.TrimSpace(string(b))
		}
		out = append(out, h)
	}
	return out, nil
}
