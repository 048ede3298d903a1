package rpc_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/rpc"
)

// TestCDCSendsLessAfterAnInsertion: 100 bytes inserted into the middle of
// a 3 MiB "file" on a plaintext volume shift everything after them. The
// content-defined chunker resynchronizes after the insertion and sends a
// few chunks; fixed 4 KiB blocks all differ after it and are sent whole.
func TestCDCSendsLessAfterAnInsertion(t *testing.T) {
	const size = 4 << 20
	sent := map[string]uint64{}
	for _, name := range []string{"fixed", "cdc"} {
		r := newRig(t, size, size)
		var chunker rpc.Chunker = rpc.FixedChunker{Size: 4096}
		if name == "cdc" {
			c, err := blockhash.NewChunker(blockhash.DefaultParams())
			if err != nil {
				t.Fatal(err)
			}
			chunker = rpc.NewCDCChunker(c, nil)
		}
		src := bytes.NewReader(nil)
		src.Reset(r.src)
		s, err := rpc.NewSender(rpc.SenderConfig{Volume: sVol, Peer: sPeer, Source: src, Size: size, Log: r.log, Chunker: chunker, Transport: r.tr, MaxAttempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, err := s.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		before := s.Stats().BytesSent
		// The file spans [512 KiB, 3.5 MiB); insert at 1 MiB + 17.
		const fileStart, fileEnd, at = 512 << 10, 3584 << 10, 1<<20 + 17
		ins := bytes.Repeat([]byte("inserted"), 13)[:100]
		file := append(append(bytes.Clone(r.src[fileStart:at]), ins...), r.src[at:fileEnd-len(ins)]...)
		copy(r.src[fileStart:], file)
		src.Reset(r.src)
		for reg := uint64(at / sRegion); reg < fileEnd/sRegion; reg++ {
			r.log.Write(sVol, reg)
		}
		if _, err := s.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.img.bytes(), r.src) {
			t.Fatalf("%s: replica differs", name)
		}
		sent[name] = s.Stats().BytesSent - before
	}
	t.Logf("after a 100-byte insertion into a 3 MiB file: fixed sent %d bytes, cdc %d", sent["fixed"], sent["cdc"])
	if sent["cdc"]*8 > sent["fixed"] {
		t.Fatalf("cdc sent %d bytes, fixed %d: want far fewer", sent["cdc"], sent["fixed"])
	}
}
