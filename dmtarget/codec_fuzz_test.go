package dmtarget

import (
	"reflect"
	"testing"
)

// FuzzDecodeHeader: decoding never panics, and a decoded header re-encodes
// to the same fields.
func FuzzDecodeHeader(f *testing.F) {
	b, _ := encodeRequest(header{Name: "vol", UUID: "u", Flags: 3, EventNr: 9}, []byte("x"), 400)
	f.Add(b)
	f.Add(make([]byte, headerSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, data, err := decodeHeader(b)
		if err != nil {
			return
		}
		if len(data) > len(b) {
			t.Fatalf("data area longer than buffer")
		}
		h2 := h
		b2, err := encodeRequest(h, nil, 0)
		if err != nil {
			return // names with bytes after an embedded NUL cannot exceed the limit; ok
		}
		got, _, err := decodeHeader(b2)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		got.DataSize, got.DataStart = h2.DataSize, h2.DataStart
		if got != h2 {
			t.Fatalf("round trip: %+v != %+v", got, h2)
		}
	})
}

// FuzzDecodeTargets: decoding never panics, and decoded targets re-encode
// (kernel status layout) and decode to the same targets.
func FuzzDecodeTargets(f *testing.F) {
	f.Add(encodeTargetsForStatus([]Target{{0, 8, "mirror", "2 a b 1/1 1 AA 1 core"}, {8, 8, "error", ""}}), uint32(2))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, count uint32) {
		ts, err := decodeTargets(data, count)
		if err != nil {
			return
		}
		again, err := decodeTargets(encodeTargetsForStatus(ts), uint32(len(ts)))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(ts) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(ts, again) {
			t.Fatalf("round trip:\n%+v\n%+v", ts, again)
		}
	})
}

// FuzzTableLoadRoundTrip: a table encoded for DM_TABLE_LOAD has the
// layout the kernel walks (next relative to the current spec).
func FuzzTableLoadRoundTrip(f *testing.F) {
	f.Add(uint64(0), uint64(8), "linear", "/dev/vda 0", "error", "")
	f.Fuzz(func(t *testing.T, start, length uint64, typ1, p1, typ2, p2 string) {
		ts := []Target{{start, length, typ1, p1}, {start + length, length, typ2, p2}}
		b, err := encodeTargets(ts)
		if err != nil {
			return
		}
		got, err := walkLoadTable(b, 2)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, ts) {
			t.Fatalf("got %+v want %+v", got, ts)
		}
	})
}

// walkLoadTable decodes a DM_TABLE_LOAD payload the way the kernel's
// populate_table walks it: next is relative to the current spec and must
// be 8-aligned.
func walkLoadTable(b []byte, count int) ([]Target, error) {
	var out []Target
	off := 0
	for i := 0; i < count; i++ {
		ts, err := decodeTargets(b[off:], 1)
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
		next := int(nativeUint32(b[off+20:]))
		if next%8 != 0 {
			return nil, ErrMalformed
		}
		off += next
	}
	return out, nil
}

// FuzzDecodeNameList: decoding never panics, and decoded lists round-trip.
func FuzzDecodeNameList(f *testing.F) {
	f.Add(encodeNameList([]DeviceName{{Name: "a", UUID: "u", Major: 253, EventNr: 1}, {Name: "b", Major: 253, Minor: 1}}))
	f.Add(encodeNameList(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := decodeNameList(data)
		if err != nil {
			return
		}
		again, err := decodeNameList(encodeNameList(ds))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(ds) == 0 && len(again) == 0 {
			return
		}
		// A device 0:0 as first entry reads as "no devices": skip such inputs.
		if len(ds) > 0 && ds[0].Major == 0 && ds[0].Minor == 0 {
			return
		}
		if !reflect.DeepEqual(ds, again) {
			t.Fatalf("round trip:\n%+v\n%+v", ds, again)
		}
	})
}
