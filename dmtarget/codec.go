package dmtarget

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// This file encodes and decodes the buffers of the dm ioctl interface
// (include/uapi/linux/dm-ioctl.h, interface version 4). It is pure code: no
// syscalls, so it is tested and fuzzed on any OS.
//
// Every ioctl passes one buffer: a 312-byte struct dm_ioctl header, then a
// data area starting at data_start and ending at data_size. The header is
// in host byte order.

const (
	headerSize   = 312 // sizeof(struct dm_ioctl)
	specSize     = 40  // sizeof(struct dm_target_spec)
	nameLen      = 128 // DM_NAME_LEN, including the NUL
	uuidLen      = 129 // DM_UUID_LEN, including the NUL
	typeNameLen  = 16  // DM_MAX_TYPE_NAME, including the NUL
	nameListHead = 12  // offset of name in struct dm_name_list

	offVersion     = 0
	offDataSize    = 12
	offDataStart   = 16
	offTargetCount = 20
	offOpenCount   = 24
	offFlags       = 28
	offEventNr     = 32
	offDev         = 40
	offName        = 48
	offUUID        = 176
)

// Header flags (DM_*_FLAG) that callers of this package see in Info.
const (
	flagReadOnly         = 1 << 0
	flagSuspend          = 1 << 1
	flagPersistentDev    = 1 << 3
	flagStatusTable      = 1 << 4
	flagActivePresent    = 1 << 5
	flagInactivePresent  = 1 << 6
	flagBufferFull       = 1 << 8
	flagSkipLockFS       = 1 << 10
	flagNoFlush          = 1 << 11
	flagUUID             = 1 << 14
	flagDataOut          = 1 << 16
	nameListFlagHasUUID  = 1
	nameListFlagNoUUID   = 2
	interfaceMajor       = 4
	interfaceMinor       = 0 // oldest minor whose features we rely on
	interfacePatchlevel  = 0
	maxDecodedCollection = 1 << 16
)

// ErrMalformed is returned when a buffer from the kernel cannot be decoded.
var ErrMalformed = errors.New("malformed dm ioctl buffer")

// header is the decoded struct dm_ioctl.
type header struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
	UUID        string
}

// encodeRequest builds an ioctl buffer of at least size bytes: h followed by
// payload in the data area. DataStart and DataSize are set by this function.
func encodeRequest(h header, payload []byte, size int) ([]byte, error) {
	if len(h.Name) >= nameLen {
		return nil, fmt.Errorf("device name %q is longer than %d bytes: use a shorter name", h.Name, nameLen-1)
	}
	if len(h.UUID) >= uuidLen {
		return nil, fmt.Errorf("device uuid %q is longer than %d bytes: use a shorter uuid", h.UUID, uuidLen-1)
	}
	n := headerSize + len(payload)
	if size < n {
		size = n
	}
	b := make([]byte, size)
	ne := binary.NativeEndian
	for i, v := range h.Version {
		ne.PutUint32(b[offVersion+4*i:], v)
	}
	ne.PutUint32(b[offDataSize:], uint32(size))
	ne.PutUint32(b[offDataStart:], headerSize)
	ne.PutUint32(b[offTargetCount:], h.TargetCount)
	ne.PutUint32(b[offOpenCount:], uint32(h.OpenCount))
	ne.PutUint32(b[offFlags:], h.Flags)
	ne.PutUint32(b[offEventNr:], h.EventNr)
	ne.PutUint64(b[offDev:], h.Dev)
	copy(b[offName:offName+nameLen-1], h.Name)
	copy(b[offUUID:offUUID+uuidLen-1], h.UUID)
	copy(b[headerSize:], payload)
	return b, nil
}

// decodeHeader decodes the header of an ioctl buffer and returns the data
// area (data_start to data_size, clipped to the buffer).
func decodeHeader(b []byte) (header, []byte, error) {
	var h header
	if len(b) < headerSize {
		return h, nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrMalformed, len(b), headerSize)
	}
	ne := binary.NativeEndian
	for i := range h.Version {
		h.Version[i] = ne.Uint32(b[offVersion+4*i:])
	}
	h.DataSize = ne.Uint32(b[offDataSize:])
	h.DataStart = ne.Uint32(b[offDataStart:])
	h.TargetCount = ne.Uint32(b[offTargetCount:])
	h.OpenCount = int32(ne.Uint32(b[offOpenCount:]))
	h.Flags = ne.Uint32(b[offFlags:])
	h.EventNr = ne.Uint32(b[offEventNr:])
	h.Dev = ne.Uint64(b[offDev:])
	h.Name = cstring(b[offName : offName+nameLen])
	h.UUID = cstring(b[offUUID : offUUID+uuidLen])
	start, end := uint64(h.DataStart), uint64(h.DataSize)
	if end <= start {
		// Replies without data set data_size to offsetof(struct
		// dm_ioctl, data) = 305, below data_start: no data.
		return h, nil, nil
	}
	if start < headerSize || end > uint64(len(b)) {
		return h, nil, fmt.Errorf("%w: data area %d..%d outside buffer of %d bytes", ErrMalformed, start, end, len(b))
	}
	return h, b[start:end], nil
}

// cstring returns b up to its first NUL (all of b if there is none).
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func align8(n int) int { return (n + 7) &^ 7 }

// encodeTargets encodes a table for DM_TABLE_LOAD: one dm_target_spec per
// target, each followed by its NUL-terminated parameters and padded to 8
// bytes. Each spec's next is the distance from that spec to the next one.
func encodeTargets(ts []Target) ([]byte, error) {
	var out []byte
	for i, t := range ts {
		if t.Type == "" || len(t.Type) >= typeNameLen {
			return nil, fmt.Errorf("target %d: type %q must be 1..%d bytes", i, t.Type, typeNameLen-1)
		}
		if bytes.IndexByte([]byte(t.Params), 0) >= 0 || bytes.IndexByte([]byte(t.Type), 0) >= 0 {
			return nil, fmt.Errorf("target %d (%s): NUL byte in type or parameters", i, t.Type)
		}
		n := align8(specSize + len(t.Params) + 1)
		spec := make([]byte, n)
		ne := binary.NativeEndian
		ne.PutUint64(spec[0:], t.Start)
		ne.PutUint64(spec[8:], t.Length)
		ne.PutUint32(spec[20:], uint32(n))
		copy(spec[24:24+typeNameLen-1], t.Type)
		copy(spec[specSize:], t.Params)
		out = append(out, spec...)
	}
	return out, nil
}

// decodeTargets decodes count target specs from the data area of a
// DM_TABLE_STATUS or DM_DEV_WAIT reply. There, each spec's next is the
// offset of the next spec from the start of the data area.
func decodeTargets(data []byte, count uint32) ([]Target, error) {
	if uint64(count) > uint64(len(data)/specSize) {
		return nil, fmt.Errorf("%w: %d targets cannot fit in %d bytes", ErrMalformed, count, len(data))
	}
	ts := make([]Target, 0, count)
	off := 0
	ne := binary.NativeEndian
	for i := uint32(0); i < count; i++ {
		if off < 0 || off+specSize > len(data) {
			return nil, fmt.Errorf("%w: target %d at offset %d outside data of %d bytes", ErrMalformed, i, off, len(data))
		}
		s := data[off:]
		if bytes.IndexByte(s[24:24+typeNameLen], 0) < 0 {
			return nil, fmt.Errorf("%w: target %d type not NUL-terminated", ErrMalformed, i)
		}
		params := s[specSize:]
		end := bytes.IndexByte(params, 0)
		if end < 0 {
			return nil, fmt.Errorf("%w: target %d parameters not NUL-terminated", ErrMalformed, i)
		}
		ts = append(ts, Target{
			Start:  ne.Uint64(s[0:]),
			Length: ne.Uint64(s[8:]),
			Type:   cstring(s[24 : 24+typeNameLen]),
			Params: string(params[:end]),
		})
		next := ne.Uint32(s[20:])
		if i+1 < count && int64(next) <= int64(off) {
			return nil, fmt.Errorf("%w: target %d next offset %d does not move forward", ErrMalformed, i, next)
		}
		off = int(next)
	}
	return ts, nil
}

// encodeTargetsForStatus encodes targets the way the kernel returns them
// from DM_TABLE_STATUS (next relative to the data area). Tests and the fake
// use it to produce kernel-shaped replies.
func encodeTargetsForStatus(ts []Target) []byte {
	var out []byte
	ne := binary.NativeEndian
	for _, t := range ts {
		n := align8(specSize + len(t.Params) + 1)
		spec := make([]byte, n)
		ne.PutUint64(spec[0:], t.Start)
		ne.PutUint64(spec[8:], t.Length)
		ne.PutUint32(spec[20:], uint32(len(out)+n))
		copy(spec[24:24+typeNameLen-1], t.Type)
		copy(spec[specSize:], t.Params)
		out = append(out, spec...)
	}
	return out
}

// decodeNameList decodes the data area of a DM_LIST_DEVICES reply: a chain
// of struct dm_name_list entries (dev u64, next u32, name), each followed on
// newer kernels by an 8-aligned {event_nr u32, flags u32} and, when flags
// has DM_NAME_LIST_FLAG_HAS_UUID, the NUL-terminated uuid. A first entry
// with dev 0 means there are no devices.
func decodeNameList(data []byte) ([]DeviceName, error) {
	var out []DeviceName
	ne := binary.NativeEndian
	off := 0
	for len(out) < maxDecodedCollection {
		if off+nameListHead > len(data) {
			if off == 0 && len(data) >= 8 && ne.Uint64(data) == 0 {
				return nil, nil
			}
			if off == 0 && len(data) == 0 {
				return nil, nil
			}
			return nil, fmt.Errorf("%w: name list entry at %d outside data of %d bytes", ErrMalformed, off, len(data))
		}
		e := data[off:]
		dev := ne.Uint64(e)
		if off == 0 && dev == 0 {
			return nil, nil
		}
		next := ne.Uint32(e[8:])
		limit := len(e)
		if next != 0 {
			if int64(next) < nameListHead+1 || int64(next) > int64(len(e)) {
				return nil, fmt.Errorf("%w: name list entry at %d has next %d", ErrMalformed, off, next)
			}
			limit = int(next)
		}
		rest := e[nameListHead:limit]
		nul := bytes.IndexByte(rest, 0)
		if nul < 0 {
			return nil, fmt.Errorf("%w: name at %d not NUL-terminated", ErrMalformed, off)
		}
		d := DeviceName{Name: string(rest[:nul]), Major: devMajor(dev), Minor: devMinor(dev)}
		// Extra fields (dm ioctl 4.37+): 8-aligned from the entry start.
		x := align8(nameListHead+nul+1) - nameListHead
		if x+8 <= len(rest) {
			d.EventNr = ne.Uint32(rest[x:])
			flags := ne.Uint32(rest[x+4:])
			if flags&nameListFlagHasUUID != 0 {
				u := rest[x+8:]
				n := bytes.IndexByte(u, 0)
				if n < 0 {
					return nil, fmt.Errorf("%w: uuid of %q not NUL-terminated", ErrMalformed, d.Name)
				}
				d.UUID = string(u[:n])
			}
		}
		out = append(out, d)
		if next == 0 {
			return out, nil
		}
		off += int(next)
	}
	return nil, fmt.Errorf("%w: more than %d devices in name list", ErrMalformed, maxDecodedCollection)
}

// encodeNameList encodes devices the way the kernel's DM_LIST_DEVICES does
// (with event numbers and uuids). The fake and the tests use it.
func encodeNameList(ds []DeviceName) []byte {
	if len(ds) == 0 {
		return make([]byte, 16)
	}
	var out []byte
	ne := binary.NativeEndian
	for i, d := range ds {
		n := align8(nameListHead + len(d.Name) + 1)
		extra := 8
		if d.UUID != "" {
			extra += len(d.UUID) + 1
		}
		size := align8(n + extra)
		e := make([]byte, size)
		ne.PutUint64(e, devEncode(d.Major, d.Minor))
		if i+1 < len(ds) {
			ne.PutUint32(e[8:], uint32(size))
		}
		copy(e[nameListHead:], d.Name)
		ne.PutUint32(e[n:], d.EventNr)
		if d.UUID != "" {
			ne.PutUint32(e[n+4:], nameListFlagHasUUID)
			copy(e[n+8:], d.UUID)
		} else {
			ne.PutUint32(e[n+4:], nameListFlagNoUUID)
		}
		out = append(out, e...)
	}
	return out
}

// encodeMessage encodes a DM_TARGET_MSG payload: struct dm_target_msg
// (sector u64) followed by the NUL-terminated message.
func encodeMessage(sector uint64, msg string) ([]byte, error) {
	if bytes.IndexByte([]byte(msg), 0) >= 0 {
		return nil, fmt.Errorf("target message %q contains a NUL byte", msg)
	}
	b := make([]byte, 8+len(msg)+1)
	binary.NativeEndian.PutUint64(b, sector)
	copy(b[8:], msg)
	return b, nil
}

// devEncode encodes a device number the way the kernel's huge_encode_dev
// does for dm_ioctl.dev: minor low byte, major, then the rest of minor.
func devEncode(major, minor uint32) uint64 {
	return uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

func devMajor(dev uint64) uint32 { return uint32((dev>>8)&0xfff) | uint32(dev>>32)&^0xfff }
func devMinor(dev uint64) uint32 { return uint32(dev&0xff) | uint32((dev>>12)&0xffffff00) }

func nativeUint32(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }
