package rpc_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

// BenchmarkFullSync replicates a 256 MiB file image into a file image
// fsynced on disk, with B's index in Pebble on disk, over the in-memory
// transport: the engine's own cost without TLS and gRPC (profile it with
// -cpuprofile).
func BenchmarkFullSync(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	src := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{5}).Read(src)
	if err := os.WriteFile(filepath.Join(dir, "a.img"), src, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for i := range b.N {
		a, err := os.Open(filepath.Join(dir, "a.img"))
		if err != nil {
			b.Fatal(err)
		}
		img, err := os.Create(filepath.Join(dir, "b.img"))
		if err != nil {
			b.Fatal(err)
		}
		db, err := pebbledb.Open(filepath.Join(dir, "db", string(rune('a'+i))), &pebbledb.Options{})
		if err != nil {
			b.Fatal(err)
		}
		recv, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: pebble.NewReplicaStore(db), Volumes: []rpc.ReceiveVolume{{Name: sVol, Image: img, Size: size, Senders: []string{sPeer}}}})
		if err != nil {
			b.Fatal(err)
		}
		log := rpctest.NewFakeLog()
		log.AddVolume(sVol, 4<<20, size/(4<<20))
		s, err := rpc.NewSender(rpc.SenderConfig{Volume: sVol, Peer: sPeer, Source: a, Size: size, Log: log, Chunker: rpc.FixedChunker{Size: 4096}, Transport: &rpctest.Transport{Recv: recv, Peer: sPeer}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.RunOnce(context.Background()); err != nil {
			b.Fatal(err)
		}
		db.Close()
		img.Close()
		a.Close()
	}
}
