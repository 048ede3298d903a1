package grpctransport

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

func dataReq(index uint32, n int, partial bool) *pb.ApplyRequest {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + int(index))
	}
	return &pb.ApplyRequest{Msg: &pb.ApplyRequest_Data{Data: &pb.Data{Index: index, Data: b, Partial: partial}}}
}

// TestDataCodec: a Data message encodes to exactly proto.Marshal's bytes,
// and decodes to a message proto.Equal to the one sent, through the codec
// gRPC calls.
func TestDataCodec(t *testing.T) {
	for _, tc := range []struct {
		index   uint32
		n       int
		partial bool
	}{
		{0, 4096, false}, {1, 4096, true}, {300, 100000, false}, {1<<32 - 1, 256 << 10, true}, {7, 4095, false}, {7, 0, false},
	} {
		req := dataReq(tc.index, tc.n, tc.partial)
		want, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		bs, err := codec{}.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := bs.Materialize(); !bytes.Equal(got, want) {
			t.Fatalf("index %d, %d bytes, partial %v: encoded %x..., proto.Marshal gives %x...", tc.index, tc.n, tc.partial, got[:min(len(got), 16)], want[:min(len(want), 16)])
		}
		// As gRPC hands a message over: in pieces.
		var in mem.BufferSlice
		for off := 0; off < len(want); off += 1000 {
			in = append(in, mem.SliceBuffer(want[off:min(off+1000, len(want))]))
		}
		var got pb.ApplyRequest
		got.Msg = &pb.ApplyRequest_Done{Done: &pb.Done{}} // decoding replaces what was there
		if err := (codec{}).Unmarshal(in, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, req) {
			t.Fatalf("index %d, %d bytes, partial %v: decoded a different message", tc.index, tc.n, tc.partial)
		}
		// The server's handler reads into an inbound: a run of dataNoCopyMin
		// bytes or more aliases the buffer handed back with it.
		in2 := &inbound{buf: mem.SliceBuffer("stale")}
		if err := (codec{}).Unmarshal(in, in2); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(in2.req, req) {
			t.Fatalf("index %d, %d bytes, partial %v: decoded a different inbound message", tc.index, tc.n, tc.partial)
		}
		if aliased := in2.buf != nil; aliased != (tc.n >= dataNoCopyMin) {
			t.Fatalf("%d bytes: buffer handed back %v, want %v", tc.n, aliased, tc.n >= dataNoCopyMin)
		}
		if in2.buf != nil {
			b, d := in2.buf.ReadOnlyData(), in2.req.GetData().GetData()
			if &b[len(b)-len(d)-boolSize(tc.partial)] != &d[0] {
				t.Fatalf("%d bytes: the Data bytes do not alias the buffer handed back", tc.n)
			}
			in2.buf.Free()
		}
	}
}

// boolSize is the encoded size of Data.partial when set.
func boolSize(set bool) int {
	if set {
		return 2
	}
	return 0
}

// FuzzUnmarshalData: whatever unmarshalData accepts, proto.Unmarshal
// accepts too and decodes to the same Data message.
func FuzzUnmarshalData(f *testing.F) {
	for _, req := range []*pb.ApplyRequest{dataReq(0, 10, false), dataReq(5, 40, true), {Msg: &pb.ApplyRequest_Done{Done: &pb.Done{WantRoot: true}}}} {
		b, _ := proto.Marshal(req)
		f.Add(b)
	}
	f.Add([]byte{0x12, 0x04, 0x08, 0x01, 0x08, 0x02}) // index twice
	f.Fuzz(func(t *testing.T, b []byte) {
		d, ok := unmarshalData(b)
		if !ok {
			return
		}
		var want pb.ApplyRequest
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatalf("unmarshalData took %x, which proto.Unmarshal refuses: %v", b, err)
		}
		if !proto.Equal(want.GetData(), d) || want.GetData() == nil {
			t.Fatalf("%x: unmarshalData gave %v, proto.Unmarshal %v", b, d, want.GetData())
		}
	})
}
