package grpctransport

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// A Data message (ApplyRequest.data) carries a run of chunk bytes, most of
// a full sync's traffic. proto.Marshal copies the bytes into the message's
// buffer, and proto.Unmarshal copies them out again; these two functions
// encode and decode exactly gRPC's protobuf wire format for it without
// either copy (a full sync's profile: 0.18 s of memmove per GiB).

// Field numbers of replica.proto.
const (
	fieldApplyData   = 2 // ApplyRequest.data
	fieldDataIndex   = 1 // Data.index
	fieldDataData    = 2 // Data.data
	fieldDataPartial = 3 // Data.partial
)

// dataNoCopyMin is the least Data payload encoded without a copy.
const dataNoCopyMin = 4096

// marshalData encodes ApplyRequest{data: d} as proto.Marshal does, with
// d's bytes as a buffer of their own: they must not change until gRPC has
// written them.
func marshalData(d *pb.Data) mem.BufferSlice {
	data := d.GetData()
	inner := protowire.SizeTag(fieldDataData) + protowire.SizeBytes(len(data))
	if d.GetIndex() != 0 {
		inner += protowire.SizeTag(fieldDataIndex) + protowire.SizeVarint(uint64(d.GetIndex()))
	}
	if d.GetPartial() {
		inner += protowire.SizeTag(fieldDataPartial) + 1
	}
	hdr := make([]byte, 0, 24)
	hdr = protowire.AppendTag(hdr, fieldApplyData, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(inner))
	if d.GetIndex() != 0 {
		hdr = protowire.AppendTag(hdr, fieldDataIndex, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(d.GetIndex()))
	}
	hdr = protowire.AppendTag(hdr, fieldDataData, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(data)))
	bs := mem.BufferSlice{mem.SliceBuffer(hdr), mem.SliceBuffer(data)}
	if d.GetPartial() {
		tail := protowire.AppendTag(nil, fieldDataPartial, protowire.VarintType)
		bs = append(bs, mem.SliceBuffer(protowire.AppendVarint(tail, 1)))
	}
	return bs
}

// unmarshalData decodes b as an ApplyRequest holding a Data message whose
// bytes alias b. It reports false for anything else (another message, a
// field repeated or unknown, a malformed encoding), which proto.Unmarshal
// then decodes, or refuses.
func unmarshalData(b []byte) (*pb.Data, bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != fieldApplyData || typ != protowire.BytesType {
		return nil, false
	}
	inner, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, false
	}
	d := &pb.Data{}
	var seen [4]bool
	for len(inner) > 0 {
		num, typ, n := protowire.ConsumeTag(inner)
		if n < 0 || num < fieldDataIndex || num > fieldDataPartial || seen[num] {
			return nil, false
		}
		seen[num] = true
		inner = inner[n:]
		switch {
		case num == fieldDataData && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(inner)
			if n < 0 {
				return nil, false
			}
			d.Data, inner = v, inner[n:]
		case num != fieldDataData && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(inner)
			if n < 0 || (num == fieldDataIndex && v > 1<<32-1) || (num == fieldDataPartial && v > 1) {
				return nil, false
			}
			if num == fieldDataIndex {
				d.Index = uint32(v)
			} else {
				d.Partial = v == 1
			}
			inner = inner[n:]
		default:
			return nil, false
		}
	}
	return d, true
}
