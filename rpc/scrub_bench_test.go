package rpc_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

// BenchmarkScrubVsRead compares verify's read rate (the receiver scrubbing
// a 256 MiB file image while the sender reads and hashes its source, over
// the in-memory transport, rate unbounded) with a plain sequential read of
// the same image in 1 MiB reads, as dd bs=1M does; peer-scrub is
// the receiver's scrub alone. Compare the MB/s figures as ratios; all
// read through the page cache here, so they measure the hashing's cost.
func BenchmarkScrubVsRead(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(data)
	for _, n := range []string{"a.img", "b.img"} {
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("dd", func(b *testing.B) {
		b.SetBytes(size)
		buf := make([]byte, 1<<20)
		for range b.N {
			f, err := os.Open(filepath.Join(dir, "b.img"))
			if err != nil {
				b.Fatal(err)
			}
			for {
				if _, err := f.Read(buf); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
		}
	})
	a, err := os.Open(filepath.Join(dir, "a.img"))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	img, err := os.OpenFile(filepath.Join(dir, "b.img"), os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer img.Close()
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem(), Logger: quietPebble{}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
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
	b.Run("peer-scrub", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			err := recv.Scrub(context.Background(), sPeer, rpc.ScrubRequest{Volume: sVol, Rate: 1 << 40}, func(rpc.ScrubDigests) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			v, err := s.VerifyWith(context.Background(), rpc.VerifyOptions{Rate: 1 << 40})
			if err != nil || !v.Equal {
				b.Fatalf("verify: %+v, %v", v.Differ, err)
			}
		}
	})
}

// quietPebble keeps Pebble's info lines out of benchmark output.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)      {}
func (quietPebble) Errorf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (quietPebble) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
