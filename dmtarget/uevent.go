package dmtarget

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Uevent is a kobject uevent as the kernel or udev multicast it.
type Uevent struct {
	Action  string            // add, change, remove...
	DevPath string            // /devices/virtual/block/dm-0
	Env     map[string]string // KEY=VALUE properties (DM_NAME, MAJOR...)
}

// udevMagic is libudev's monitor header magic (big-endian on the wire).
const udevMagic = 0xfeedcafe

// ParseUevent parses one uevent datagram in either form:
//   - kernel: "ACTION@DEVPATH\0KEY=VALUE\0..."
//   - udev: the "libudev\0" monitor header (magic 0xfeedcafe big-endian,
//     then header size, properties offset and length in host order),
//     then "KEY=VALUE\0..." with ACTION and DEVPATH among the keys.
func ParseUevent(b []byte) (Uevent, error) {
	var props []byte
	ev := Uevent{Env: map[string]string{}}
	if bytes.HasPrefix(b, []byte("libudev\x00")) {
		if len(b) < 24 {
			return Uevent{}, fmt.Errorf("udev monitor message of %d bytes is shorter than its header", len(b))
		}
		if m := binary.BigEndian.Uint32(b[8:]); m != udevMagic {
			return Uevent{}, fmt.Errorf("udev monitor message has magic %#x, want %#x", m, udevMagic)
		}
		off := uint64(binary.NativeEndian.Uint32(b[16:]))
		n := uint64(binary.NativeEndian.Uint32(b[20:]))
		if off < 24 || off+n > uint64(len(b)) {
			return Uevent{}, fmt.Errorf("udev monitor properties %d+%d outside message of %d bytes", off, n, len(b))
		}
		props = b[off : off+n]
	} else {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			i = len(b)
		}
		head := b[:i]
		at := bytes.IndexByte(head, '@')
		if at <= 0 || at == len(head)-1 {
			return Uevent{}, fmt.Errorf("uevent header %q: want ACTION@DEVPATH", head)
		}
		ev.Action, ev.DevPath = string(head[:at]), string(head[at+1:])
		if i < len(b) {
			props = b[i+1:]
		}
	}
	for len(props) > 0 {
		i := bytes.IndexByte(props, 0)
		var kv []byte
		if i < 0 {
			kv, props = props, nil
		} else {
			kv, props = props[:i], props[i+1:]
		}
		if len(kv) == 0 {
			continue
		}
		eq := bytes.IndexByte(kv, '=')
		if eq <= 0 {
			return Uevent{}, fmt.Errorf("uevent property %q: want KEY=VALUE", kv)
		}
		ev.Env[string(kv[:eq])] = string(kv[eq+1:])
	}
	if a, ok := ev.Env["ACTION"]; ok && ev.Action == "" {
		ev.Action = a
	}
	if d, ok := ev.Env["DEVPATH"]; ok && ev.DevPath == "" {
		ev.DevPath = d
	}
	if ev.Action == "" {
		return Uevent{}, fmt.Errorf("uevent without ACTION")
	}
	return ev, nil
}
