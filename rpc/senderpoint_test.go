package rpc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/dmsync/dmsync/pebble"
	"github.com/dmsync/dmsync/rpc"
	"github.com/dmsync/dmsync/rpc/rpctest"
)

// liveVolume is a source volume a writer changes while the sender reads
// it. Its writes model the kernel's path: MARK, the write, CLEAR; frozen
// holds them back as a suspended top device does (a write in flight
// completes before the freeze returns).
type liveVolume struct {
	mu     sync.RWMutex // guards b
	frozen sync.RWMutex // write-locked while frozen
	b      []byte
	log    *rpctest.FakeLog
	region uint64
}

func (v *liveVolume) ReadAt(p []byte, off int64) (int, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return copy(p, v.b[off:]), nil
}

func (v *liveVolume) write(off uint64, p []byte) {
	v.frozen.RLock()
	defer v.frozen.RUnlock()
	r := off / v.region
	v.log.Mark(sVol, r)
	v.mu.Lock()
	copy(v.b[off:], p)
	v.mu.Unlock()
	v.log.Clear(sVol, r)
}

func (v *liveVolume) freezer(ctx context.Context, maxPause time.Duration) (rpc.Freeze, error) {
	v.frozen.Lock()
	at := time.Now()
	var once sync.Once
	return rpc.Freeze{At: at, Thaw: func(context.Context) (bool, time.Duration, error) {
		once.Do(v.frozen.Unlock)
		return true, time.Since(at), nil
	}}, nil
}

// Records: record i (from 0) is 4 KiB at slot (i*37) mod n, so writes in
// order land all over the volume. Its first 8 bytes are i+1, the rest a
// pattern of i.
const recSize = 4096

func record(i int) []byte {
	b := make([]byte, recSize)
	binary.BigEndian.PutUint64(b, uint64(i+1))
	for k := 8; k < recSize; k++ {
		b[k] = byte(i*31 + k)
	}
	return b
}

func slot(i, n int) uint64 { return uint64((i*37)%n) * recSize }

// prefixOf returns k if the image holds exactly records 0..k-1 (in write
// order) and none after, or an error naming the first gap.
func prefixOf(img []byte, written int) (int, error) {
	n := len(img) / recSize
	k := 0
	for k < written {
		off := slot(k, n)
		if string(img[off:off+recSize]) != string(record(k)) {
			break
		}
		k++
	}
	for j := k; j < n && j < written+1; j++ {
		off := slot(j, n)
		if binary.BigEndian.Uint64(img[off:]) != 0 {
			return k, fmt.Errorf("records 0..%d are there, %d is not, but %d is: not a point in time of the source", k-1, k, j)
		}
	}
	return k, nil
}

// TestPointsWriteOrder is the write-order proof on the host: a writer
// writes numbered records in order while a sender with consistency points
// replicates, and rounds of faults hit it: the network cut at random
// operations, the sender killed (a new one starts with nothing in memory),
// the receiver restarted, and the receiver's disk failing in the middle of
// applying a point. After every round the replica, as a restarted receiver
// recovers it, must hold exactly a prefix of the records, never going
// back; at the end, all of them.
func TestPointsWriteOrder(t *testing.T) {
	const size = 4 << 20
	const n = size / recSize
	db, err := pebbledb.Open("", &pebbledb.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := pebble.NewReplicaStore(db)
	img := &failingImage{memImage: memImage{b: make([]byte, size)}}
	stagingDir := t.TempDir()
	newRecv := func() *rpc.Receiver {
		r, err := rpc.NewReceiver(rpc.ReceiverConfig{Store: store, StagingDir: stagingDir,
			Volumes: []rpc.ReceiveVolume{{Name: sVol, Image: img, Size: size, Senders: []string{sPeer}}}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	log := rpctest.NewFakeLog()
	log.AddVolume(sVol, sRegion, size/sRegion)
	vol := &liveVolume{b: make([]byte, size), log: log, region: sRegion}

	written := make(chan int, 1)
	var wmu sync.Mutex
	nw := 0
	stopWriter := make(chan struct{})
	go func() {
		defer close(written)
		for i := 0; i < n; i++ {
			select {
			case <-stopWriter:
				return
			default:
			}
			vol.write(slot(i, n), record(i))
			wmu.Lock()
			nw = i + 1
			wmu.Unlock()
			time.Sleep(150 * time.Microsecond)
		}
	}()

	rng := rand.New(rand.NewPCG(1, 2))
	recv := newRecv()
	last, points := 0, 0
	run := func(tr rpc.Transport, d time.Duration) *rpc.Sender {
		s, err := rpc.NewSender(rpc.SenderConfig{
			Volume: sVol, Peer: sPeer, Source: vol, Size: size, Log: log, Chunker: rpc.FixedChunker{Size: 4096},
			Transport: tr, MaxBatchBytes: 2 * sRegion, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
			Freezer: vol.freezer, MaxCaptureBytes: 1 << 20,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		if err := s.Run(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("sender stopped: %v", err)
		}
		return s
	}
	rounds, checked := 0, 0
	for ; checked < 25 && rounds < 300; rounds++ {
		// The network is cut once, at a random operation of the round.
		ops := []string{"apply", "offer", "send", "finish", "commit"}
		cutOp, cutAt := ops[rng.IntN(len(ops))], rng.IntN(40)+1
		tr := &rpctest.Transport{Recv: recv, Peer: sPeer, Fault: func(op string, k int) error {
			if op == cutOp && k == cutAt {
				return errors.New("network cut")
			}
			return nil
		}}
		if rounds%5 == 4 {
			img.failAfter(rng.IntN(20) + 1) // the disk fails mid-apply
		}
		s := run(tr, time.Duration(50+rng.IntN(200))*time.Millisecond)
		points += s.Points().Points
		img.failAfter(0)
		recv = newRecv() // what a crash now would leave, recovered
		wmu.Lock()
		w := nw
		wmu.Unlock()
		info, err := recv.Root(sPeer, sVol)
		if err != nil {
			t.Fatal(err)
		}
		if info.Point.Seq == 0 {
			// Until its first point the replica is being filled in
			// place: it is no point in time yet, and says so.
			continue
		}
		checked++
		k, err := prefixOf(img.bytes(), w)
		if err != nil {
			t.Fatalf("round %d (point %d): %v", rounds, info.Point.Seq, err)
		}
		if k < last {
			t.Fatalf("round %d: the replica went back from %d records to %d", rounds, last, k)
		}
		last = k
	}
	close(stopWriter)
	for range written {
	}
	wmu.Lock()
	w := nw
	wmu.Unlock()
	s := run(&rpctest.Transport{Recv: recv, Peer: sPeer}, 5*time.Second)
	points += s.Points().Points
	k, err := prefixOf(img.bytes(), w)
	if err != nil || k != w {
		t.Fatalf("after the faults: %d of %d records, %v", k, w, err)
	}
	info, err := recv.Root(sPeer, sVol)
	if err != nil {
		t.Fatal(err)
	}
	if info.Point.Seq < 3 || checked < 25 {
		t.Fatalf("the replica holds point %d, %d of %d rounds checked against one: the test did not test points", info.Point.Seq, checked, rounds)
	}
	t.Logf("%d rounds (%d checked against a point), %d points applied (%d made by senders that lived to report), %d records; the largest gap in a prefix: 0", rounds, checked, info.Point.Seq, points, w)
}

// failingImage is a memImage whose writes fail after a count, as a disk
// dying in the middle of applying a point.
type failingImage struct {
	memImage
	fmu  sync.Mutex
	left int // writes left before failing; 0: never fails
}

func (f *failingImage) failAfter(n int) {
	f.fmu.Lock()
	f.left = n
	f.fmu.Unlock()
}

func (f *failingImage) WriteAt(p []byte, off int64) (int, error) {
	f.fmu.Lock()
	if f.left > 0 {
		f.left--
		if f.left == 0 {
			f.left = -1
		}
	}
	failing := f.left < 0
	f.fmu.Unlock()
	if failing {
		return 0, errors.New("injected EIO")
	}
	return f.memImage.WriteAt(p, off)
}
