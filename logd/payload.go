package logd

import (
	"encoding/binary"
	"fmt"
)

// Typed payloads of dm-log-userspace.h, all host byte order.
//
//	IS_CLEAN, IN_SYNC, IS_REMOTE_RECOVERING  request: u64 region
//	MARK_REGION, CLEAR_REGION, FLUSH         request: u64 regions[] (FLUSH
//	                                         carries marks with integrated_flush)
//	SET_REGION_SYNC                          request: {u64 region, i64 in_sync}
//	GET_REGION_SIZE, GET_SYNC_COUNT          reply: u64
//	IS_CLEAN, IN_SYNC                        reply: i64
//	GET_RESYNC_WORK                          reply: {i64 has_work, u64 region}
//	IS_REMOTE_RECOVERING                     reply: {i64 recovering, u64 in_sync_hint}
//	CTR                                      request: text; STATUS_*: reply text

// DecodeRegion decodes a single-region request payload.
func DecodeRegion(data []byte) (uint64, error) {
	if len(data) < 8 {
		return 0, fmt.Errorf("%w: region payload of %d bytes, need 8", ErrShort, len(data))
	}
	return binary.NativeEndian.Uint64(data), nil
}

// RegionCount returns how many regions a MARK/CLEAR/FLUSH payload holds; the
// payload must be a whole number of u64.
func RegionCount(data []byte) (int, error) {
	if len(data)%8 != 0 {
		return 0, fmt.Errorf("%w: region array of %d bytes is not a multiple of 8", ErrLength, len(data))
	}
	return len(data) / 8, nil
}

// RegionAt returns the i-th region of a region array (bounds checked by
// the caller through RegionCount).
func RegionAt(data []byte, i int) uint64 { return binary.NativeEndian.Uint64(data[8*i:]) }

// DecodeSetRegionSync decodes SET_REGION_SYNC's {u64 region, i64 in_sync}.
func DecodeSetRegionSync(data []byte) (region uint64, inSync bool, err error) {
	if len(data) < 16 {
		return 0, false, fmt.Errorf("%w: SET_REGION_SYNC payload of %d bytes, need 16", ErrShort, len(data))
	}
	ne := binary.NativeEndian
	return ne.Uint64(data), int64(ne.Uint64(data[8:])) != 0, nil
}

// AppendU64 appends a u64 payload.
func AppendU64(dst []byte, v uint64) []byte { return binary.NativeEndian.AppendUint64(dst, v) }

// AppendPair appends a {i64, u64} payload (GET_RESYNC_WORK and
// IS_REMOTE_RECOVERING replies, SET_REGION_SYNC requests).
func AppendPair(dst []byte, a int64, b uint64) []byte {
	dst = binary.NativeEndian.AppendUint64(dst, uint64(a))
	return binary.NativeEndian.AppendUint64(dst, b)
}

// DecodePair decodes a {i64, u64} payload.
func DecodePair(data []byte) (int64, uint64, error) {
	if len(data) < 16 {
		return 0, 0, fmt.Errorf("%w: pair payload of %d bytes, need 16", ErrShort, len(data))
	}
	ne := binary.NativeEndian
	return int64(ne.Uint64(data)), ne.Uint64(data[8:]), nil
}

// AppendRegions appends a region array payload.
func AppendRegions(dst []byte, regions ...uint64) []byte {
	for _, r := range regions {
		dst = binary.NativeEndian.AppendUint64(dst, r)
	}
	return dst
}
