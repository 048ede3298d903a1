package dmtarget

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := header{
		Version:     [3]uint32{4, 47, 0},
		TargetCount: 2,
		OpenCount:   -1,
		Flags:       flagSuspend | flagStatusTable,
		EventNr:     77,
		Dev:         devEncode(253, 300),
		Name:        "vol0",
		UUID:        "DMSYNC-1234",
	}
	b, err := encodeRequest(h, []byte("payload\x00"), 1024)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 1024 {
		t.Fatalf("buffer is %d bytes, want 1024", len(b))
	}
	got, data, err := decodeHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	h.DataStart, h.DataSize = headerSize, 1024
	if got != h {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, h)
	}
	if !bytes.HasPrefix(data, []byte("payload\x00")) || len(data) != 1024-headerSize {
		t.Fatalf("data area %q (%d bytes)", data[:16], len(data))
	}
	// Fixed offsets of struct dm_ioctl.
	ne := binary.NativeEndian
	if ne.Uint32(b[16:]) != headerSize || ne.Uint32(b[28:]) != h.Flags || ne.Uint32(b[32:]) != 77 {
		t.Fatalf("field offsets wrong: % x", b[:48])
	}
	if string(b[48:52]) != "vol0" || string(b[176:187]) != "DMSYNC-1234" {
		t.Fatalf("name/uuid offsets wrong")
	}
}

func TestEncodeRequestRejects(t *testing.T) {
	for _, h := range []header{
		{Name: strings.Repeat("n", nameLen)},
		{UUID: strings.Repeat("u", uuidLen)},
	} {
		if _, err := encodeRequest(h, nil, 0); err == nil {
			t.Errorf("encodeRequest(%d-byte name, %d-byte uuid) succeeded", len(h.Name), len(h.UUID))
		}
	}
	// The longest legal name fits.
	if _, err := encodeRequest(header{Name: strings.Repeat("n", nameLen-1)}, nil, 0); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeHeaderBadDataArea(t *testing.T) {
	b, _ := encodeRequest(header{}, nil, 400)
	ne := binary.NativeEndian
	for _, tc := range []struct {
		name        string
		start, size uint32
	}{
		{"start inside header", 100, 400},
		{"size past buffer", headerSize, 401},
	} {
		c := bytes.Clone(b)
		ne.PutUint32(c[offDataStart:], tc.start)
		ne.PutUint32(c[offDataSize:], tc.size)
		if _, _, err := decodeHeader(c); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", tc.name, err)
		}
	}
	// A reply without data: data_size = offsetof(struct dm_ioctl, data).
	c := bytes.Clone(b)
	ne.PutUint32(c[offDataSize:], 305)
	if _, data, err := decodeHeader(c); err != nil || len(data) != 0 {
		t.Errorf("reply without data: %d bytes, %v", len(data), err)
	}
	if _, _, err := decodeHeader(b[:100]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short buffer: err %v", err)
	}
}

func TestEncodeTargetsLayout(t *testing.T) {
	ts := []Target{
		{0, 1024, "linear", "/dev/vda 0"},               // 40+10+1 -> 56
		{1024, 2048, "mirror", "core 1 1024 2 a 0 b 0"}, // 40+21+1 -> 64
	}
	b, err := encodeTargets(ts)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 56+64 {
		t.Fatalf("encoded %d bytes, want %d", len(b), 56+64)
	}
	ne := binary.NativeEndian
	// For DM_TABLE_LOAD next is relative to the current spec.
	if n := ne.Uint32(b[20:]); n != 56 {
		t.Fatalf("first next = %d, want 56", n)
	}
	if n := ne.Uint32(b[56+20:]); n != 64 {
		t.Fatalf("second next = %d, want 64", n)
	}
	if ne.Uint64(b[56:]) != 1024 || ne.Uint64(b[56+8:]) != 2048 {
		t.Fatalf("second spec start/length wrong")
	}
	if cstring(b[24:40]) != "linear" || cstring(b[40:]) != "/dev/vda 0" || cstring(b[56+40:]) != ts[1].Params {
		t.Fatalf("type/params misplaced")
	}
	for _, bad := range [][]Target{
		{{Type: ""}},
		{{Type: strings.Repeat("x", 16)}},
		{{Type: "linear", Params: "a\x00b"}},
	} {
		if _, err := encodeTargets(bad); err == nil {
			t.Errorf("encodeTargets(%q) succeeded", bad)
		}
	}
}

func TestDecodeTargets(t *testing.T) {
	want := []Target{
		{0, 2097152, "mirror", "2 253:1 253:2 16384/16384 1 AA 1 core"},
		{2097152, 8, "error", ""},
		{2097160, 8, "linear", "253:3 0"},
	}
	got, err := decodeTargets(encodeTargetsForStatus(want), 3)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got, err := decodeTargets(nil, 0); err != nil || len(got) != 0 {
		t.Fatalf("no targets: %v %v", got, err)
	}
	enc := encodeTargetsForStatus(want)
	for _, tc := range []struct {
		name  string
		data  []byte
		count uint32
	}{
		{"count too large", enc, 1000},
		{"truncated", enc[:50], 2},
		{"no NUL", bytes.Repeat([]byte{'x'}, 48), 1},
	} {
		if _, err := decodeTargets(tc.data, tc.count); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", tc.name, err)
		}
	}
	// A next offset pointing backwards must not loop.
	loop := bytes.Clone(enc)
	binary.NativeEndian.PutUint32(loop[20:], 0)
	if _, err := decodeTargets(loop, 3); !errors.Is(err, ErrMalformed) {
		t.Errorf("backward next: err %v", err)
	}
}

func TestNameList(t *testing.T) {
	want := []DeviceName{
		{Name: "vol0", UUID: "DMSYNC-MIRROR-abc", Major: 253, Minor: 0, EventNr: 3},
		{Name: "vol0-sink", Major: 253, Minor: 1},
		{Name: strings.Repeat("x", 127), UUID: strings.Repeat("u", 128), Major: 253, Minor: 1 << 12},
	}
	got, err := decodeNameList(encodeNameList(want))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got, err := decodeNameList(encodeNameList(nil)); err != nil || got != nil {
		t.Fatalf("empty list: %v %v", got, err)
	}
}

// TestNameListOldKernel decodes the layout of kernels before dm ioctl 4.37:
// entries with only dev, next and name.
func TestNameListOldKernel(t *testing.T) {
	ne := binary.NativeEndian
	e1 := make([]byte, 24) // 12 + "a\0" -> 16, next 24 to keep 8-alignment
	ne.PutUint64(e1, devEncode(253, 0))
	ne.PutUint32(e1[8:], 16)
	copy(e1[12:], "a")
	e2 := make([]byte, 16)
	ne.PutUint64(e2, devEncode(253, 1))
	copy(e2[12:], "bb")
	got, err := decodeNameList(append(e1[:16], e2...))
	if err != nil {
		t.Fatal(err)
	}
	want := []DeviceName{{Name: "a", Major: 253}, {Name: "bb", Major: 253, Minor: 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v want %+v", got, want)
	}
}

func TestDevEncode(t *testing.T) {
	for _, d := range [][2]uint32{{253, 0}, {8, 16}, {253, 255}, {253, 256}, {259, 1 << 19}, {4095, 1<<20 - 1}} {
		e := devEncode(d[0], d[1])
		if devMajor(e) != d[0] || devMinor(e) != d[1] {
			t.Errorf("%d:%d -> %#x -> %d:%d", d[0], d[1], e, devMajor(e), devMinor(e))
		}
	}
	// Kernel new_encode_dev(MKDEV(253, 1)) = 0xfd01.
	if e := devEncode(253, 1); e != 0xfd01 {
		t.Errorf("devEncode(253,1) = %#x, want 0xfd01", e)
	}
}

func TestEncodeMessage(t *testing.T) {
	b, err := encodeMessage(8, "mark region")
	if err != nil {
		t.Fatal(err)
	}
	if binary.NativeEndian.Uint64(b) != 8 || cstring(b[8:]) != "mark region" || b[len(b)-1] != 0 {
		t.Fatalf("bad message encoding % x", b)
	}
	if _, err := encodeMessage(0, "a\x00b"); err == nil {
		t.Fatal("NUL in message accepted")
	}
}

func TestParseTable(t *testing.T) {
	ts, err := ParseTable("0 100 error\n\n100 50 linear /dev/vda 8\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{{0, 100, "error", ""}, {100, 50, "linear", "/dev/vda 8"}}
	if !reflect.DeepEqual(ts, want) {
		t.Fatalf("got %+v", ts)
	}
	if FormatTable(ts) != "0 100 error\n100 50 linear /dev/vda 8\n" {
		t.Fatalf("FormatTable = %q", FormatTable(ts))
	}
	for _, bad := range []string{"0 100", "x 100 error", "0 -1 error"} {
		if _, err := ParseTable(bad); err == nil {
			t.Errorf("ParseTable(%q) succeeded", bad)
		}
	}
}
