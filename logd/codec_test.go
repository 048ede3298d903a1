package logd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func sampleMessage() (Message, []byte) {
	m := Message{NlSeq: 7, NlPid: 0, CnSeq: 42, CnAck: 0, Req: Request{
		Luid: 0x1122334455667788, Version: 3, Seq: 42, RequestType: uint32(ReqMarkRegion),
	}}
	m.Req.SetUUID("LVM-abcdef")
	return m, AppendRegions(nil, 1, 5, 1<<40)
}

func TestCodecOffsets(t *testing.T) {
	m, data := sampleMessage()
	m.Req.Error = -22
	b, err := AppendMessage(nil, &m, data)
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	if got, want := int(ne.Uint32(b)), 16+20+160+24; got != want {
		t.Fatalf("nlmsg_len %d, want %d", got, want)
	}
	if ne.Uint16(b[4:]) != nlmsgDone {
		t.Fatalf("nlmsg_type %d", ne.Uint16(b[4:]))
	}
	cn := b[16:]
	if ne.Uint32(cn) != 7 || ne.Uint32(cn[4:]) != 1 || ne.Uint32(cn[8:]) != 42 || ne.Uint16(cn[16:]) != 160+24 {
		t.Fatalf("cn_msg header wrong: % x", cn[:20])
	}
	u := cn[20:]
	if ne.Uint64(u) != 0x1122334455667788 || string(u[8:18]) != "LVM-abcdef" || u[18] != 0 {
		t.Fatalf("luid/uuid wrong")
	}
	if ne.Uint32(u[140:]) != 3 || int32(ne.Uint32(u[144:])) != -22 || ne.Uint32(u[148:]) != 42 ||
		ne.Uint32(u[152:]) != 10 || ne.Uint32(u[156:]) != 24 {
		t.Fatalf("ulog header wrong: % x", u[140:160])
	}
	if ne.Uint64(u[160+16:]) != 1<<40 {
		t.Fatal("data wrong")
	}
}

func TestCodecRoundTrip(t *testing.T) {
	m, data := sampleMessage()
	b, err := AppendMessage(nil, &m, data)
	if err != nil {
		t.Fatal(err)
	}
	// Two messages in one buffer decode one after the other.
	b, _ = AppendMessage(b, &m, nil)
	got, rest, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Req.Data, data) || string(got.Req.UUIDBytes()) != "LVM-abcdef" || got.Req.Type() != ReqMarkRegion {
		t.Fatalf("decoded %+v", got)
	}
	got.Req.Data, m.Req.Data = nil, nil
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
	}
	got2, rest, err := DecodeMessage(rest)
	if err != nil || len(rest) != 0 || got2.Req.Data != nil {
		t.Fatalf("second message: %v rest=%d data=%v", err, len(rest), got2.Req.Data)
	}
	n, _ := RegionCount(data)
	if n != 3 || RegionAt(data, 2) != 1<<40 {
		t.Fatal("regions")
	}
}

func TestCodecBadInput(t *testing.T) {
	m, data := sampleMessage()
	good, _ := AppendMessage(nil, &m, data)
	ne := binary.NativeEndian
	mut := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short nlmsghdr", good[:10], ErrShort},
		{"truncated", good[:100], ErrLength},
		{"nlmsg_len too small", mut(func(b []byte) []byte { ne.PutUint32(b, 3); return b }), ErrLength},
		{"no cn_msg", mut(func(b []byte) []byte { ne.PutUint32(b, 20); return b }), ErrShort},
		{"other connector", mut(func(b []byte) []byte { ne.PutUint32(b[16:], 1); return b }), ErrNotDMLog},
		{"cn len beyond", mut(func(b []byte) []byte { ne.PutUint16(b[32:], 60000); return b }), ErrLength},
		{"cn len short", mut(func(b []byte) []byte { ne.PutUint16(b[32:], 100); return b }), ErrShort},
		{"data_size beyond", mut(func(b []byte) []byte { ne.PutUint32(b[36+156:], 25); return b }), ErrLength},
	}
	for _, c := range cases {
		_, _, err := DecodeMessage(c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := AppendMessage(nil, &m, make([]byte, MaxDataSize+1)); !errors.Is(err, ErrLength) {
		t.Errorf("oversized data: %v", err)
	}
}

func TestPayloads(t *testing.T) {
	if _, err := DecodeRegion([]byte{1, 2}); !errors.Is(err, ErrShort) {
		t.Error("short region accepted")
	}
	if _, err := RegionCount(make([]byte, 9)); !errors.Is(err, ErrLength) {
		t.Error("ragged region array accepted")
	}
	p := AppendPair(nil, -1, 99)
	a, b, err := DecodePair(p)
	if err != nil || a != -1 || b != 99 {
		t.Errorf("pair %d %d %v", a, b, err)
	}
	r, in, err := DecodeSetRegionSync(AppendPair(nil, 7, 0))
	if err != nil || in || r != 7 {
		t.Error("set region sync zero")
	}
	ne := binary.NativeEndian
	buf := ne.AppendUint64(ne.AppendUint64(nil, 12), 1)
	r, in, err = DecodeSetRegionSync(buf)
	if err != nil || r != 12 || !in {
		t.Errorf("set region sync %d %v %v", r, in, err)
	}
}

// FuzzDecodeMessage: decoding never panics, and whatever decodes
// re-encodes to bytes that decode to the same message.
func FuzzDecodeMessage(f *testing.F) {
	m, data := sampleMessage()
	good, _ := AppendMessage(nil, &m, data)
	f.Add(good)
	f.Add(good[:50])
	f.Add([]byte{})
	m.Req.RequestType = uint32(ReqCtr)
	ctr, _ := AppendMessage(nil, &m, []byte("1048576 core 128 nosync"))
	f.Add(ctr)
	f.Fuzz(func(t *testing.T, b []byte) {
		m1, _, err := DecodeMessage(b)
		if err != nil {
			return
		}
		enc, err := AppendMessage(nil, &m1, m1.Req.Data)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, rest, err := DecodeMessage(enc)
		if err != nil || len(rest) != 0 {
			t.Fatalf("decode re-encoded: %v rest %d", err, len(rest))
		}
		if !bytes.Equal(m1.Req.Data, m2.Req.Data) {
			t.Fatalf("data differs")
		}
		m1.Req.Data, m2.Req.Data = nil, nil
		if !reflect.DeepEqual(m1, m2) {
			t.Fatalf("round trip:\n%+v\n%+v", m1, m2)
		}
		enc2, _ := AppendMessage(nil, &m2, nil)
		enc1, _ := AppendMessage(nil, &m1, nil)
		if !bytes.Equal(enc1, enc2) {
			t.Fatal("encodings differ")
		}
	})
}
