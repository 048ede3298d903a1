package grpctransport

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// TestMaxOfferBytesAdmitsValidOffers: the message bound the server checks
// before decoding admits the largest offers the receiver accepts (the most
// chunks, each in its own range at 64-bit offsets; and every byte of the
// largest batch under block fingerprints), and is far below the old 64 MiB.
func TestMaxOfferBytesAdmitsValidOffers(t *testing.T) {
	recv, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: pebble.NewReplicaStore(nil)})
	if err != nil {
		t.Fatal(err)
	}
	bound := recv.MaxOfferBytes()
	name := strings.Repeat("v", 255)
	params := rpc.ChunkParams{Algorithm: "blockhash-cdc-v1", Min: 1, Avg: 65536, Max: 1 << 20}
	most := &rpc.Offer{Volume: name, VolumeSize: 1 << 62, Params: params, Batch: 1 << 63}
	for i := range 1 << 18 {
		off := uint64(1<<62) - uint64(2*i) - 2
		most.Ranges = append(most.Ranges, rpc.Range{Start: off, End: off + 1, Chunks: []rpc.Chunk{{Offset: off, Length: 1, ID: rpc.ID{1}, Blocks: []uint64{^uint64(0)}}}})
	}
	blocks := &rpc.Offer{Volume: name, VolumeSize: 1 << 62, Params: params, Batch: 1 << 63}
	rg := rpc.Range{Start: 1 << 61}
	for pos := uint64(1 << 61); pos < 1<<61+256<<20; pos += 64 << 10 {
		fps := make([]uint64, 16)
		for i := range fps {
			fps[i] = ^uint64(i)
		}
		rg.Chunks = append(rg.Chunks, rpc.Chunk{Offset: pos, Length: 64 << 10, ID: rpc.ID{2}, Blocks: fps})
		rg.End = pos + 64<<10
	}
	blocks.Ranges = []rpc.Range{rg}
	for name, o := range map[string]*rpc.Offer{"most chunks": most, "most blocks": blocks} {
		n := proto.Size(&pb.ApplyRequest{Msg: &pb.ApplyRequest_Offer{Offer: offerToPB(o)}})
		if n > bound {
			t.Errorf("%s: a valid offer encodes to %d bytes, over the bound %d", name, n, bound)
		}
		t.Logf("%s: %d bytes of %d", name, n, bound)
	}
	if bound >= maxMsg {
		t.Errorf("bound %d is not below the old %d", bound, maxMsg)
	}
}
