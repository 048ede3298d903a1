package demo

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// TestKernelReplicationFaults: the peer is unreachable when replication
// starts, A's dmsyncd is killed with kill -9 and B's is killed and
// restarted mid-replication; every time, once `dmsync wait` says nothing is
// pending, B's replica equals A's volume byte for byte.
func TestKernelReplicationFaults(t *testing.T) {
	g := guesttest.Require(t)
	legA, legB, replica := g.WipeDisk(0), g.WipeDisk(1), g.WipeDisk(2)
	const size = 64 << 20
	const name, logUUID = "faults", "dmsync-faults"
	mirror := "/dev/mapper/" + name

	a := newNode(t, g, "fa", "")
	a.start(t)
	makeNetns(t, g, "nodefb", "10.98.0.1", "10.98.0.2")
	b := newNode(t, g, "fb", "nodefb", "--no-connector", "--listen", "10.98.0.2:7420")
	b.start(t)
	b.cli("receive", logUUID, "--from", a.id, "--image", replica, "--size", "64M")
	b.d.Stop() // B is down when replication starts

	table := fmt.Sprintf("0 %d mirror userspace 4 %s core 1024 nosync 2 %s 0 %s 0 1 handle_errors", size/512, logUUID, legA, legB)
	g.Run("dmsetup", "create", name, "--table", table)
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name) })
	write := func(n int) {
		for i := 0; i < n; i++ {
			off, _ := rand.Int(rand.Reader, big.NewInt(size/(64<<10)))
			data := make([]byte, 64<<10)
			rand.Read(data)
			if err := guesttest.WriteDirect(mirror, off.Int64()*(64<<10), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	same := func(step string) {
		t.Helper()
		for off := int64(0); off < size; off += 4 << 20 {
			x, err := guesttest.ReadDirect(mirror, off, 4<<20)
			if err != nil {
				t.Fatal(err)
			}
			y, err := guesttest.ReadDirect(replica, off, 4<<20)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(x, y) {
				t.Fatalf("%s: replica differs from the volume in [%d, %d) after dmsync wait said nothing is pending", step, off, off+4<<20)
			}
		}
		fmt.Printf("%s: replica equals the volume\n", step)
	}

	write(64)
	a.cli("peer", "add", b.id, "--addr", "10.98.0.2:7420")
	a.cli("replicate", name, "--to", b.id)
	time.Sleep(5 * time.Second)
	st := a.cli("status", "--raw")
	if !strings.Contains(st, " pending=128 ") || !strings.Contains(st, " batches=0 ") {
		t.Fatalf("with the peer down, want all 128 regions pending and no batch acknowledged:\n%s", st)
	}
	b.start(t)
	a.cli("wait", name, "--timeout", "10m")
	same("peer unreachable at start, then up")

	write(32)
	time.Sleep(500 * time.Millisecond) // let a batch get under way
	a.d.Kill9()
	a.start(t) // the kernel reconnects (CTR + RESUME) to the restarted daemon
	write(8)   // mirror I/O goes on
	a.cli("wait", name, "--timeout", "10m")
	same("A's dmsyncd killed with kill -9 mid-replication")

	write(32)
	time.Sleep(500 * time.Millisecond)
	b.d.Kill9()
	time.Sleep(2 * time.Second)
	b.start(t)
	a.cli("wait", name, "--timeout", "10m")
	same("B's dmsyncd killed and restarted mid-replication")
	a.cli("verify", name)
}
