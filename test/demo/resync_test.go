package demo

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// TestKernelResyncWrites forces the window in which the kernel writes a
// region with no MARK: a two-disk mirror made without nosync starts wholly
// out of sync, and dm-region-hash sends MARK only for regions in sync, so
// writes to regions its resync has not reached go to leg 0 unmarked. The
// second leg sits on dm-delay, so the kernel's resync crawls while the
// sender's first pass reads the whole volume; then the test writes to
// regions the resync has not reached. Those writes must still reach B:
// after the resync and `dmsync wait`, B's replica equals the volume.
func TestKernelResyncWrites(t *testing.T) {
	g := guesttest.Require(t)
	legA, legB, replica := g.WipeDisk(0), g.WipeDisk(1), g.WipeDisk(2)
	const (
		size       = 32 << 20
		regionSize = 1 << 20
		regions    = size / regionSize
		written    = 4 // the last regions, written during the resync
		name       = "resync"
		logUUID    = "dmsync-resync"
		slow       = "resync-slowleg"
	)
	mirror := "/dev/mapper/" + name

	a := newNode(t, g, "ra", "")
	a.start(t)
	makeNetns(t, g, "noderb", "10.97.0.1", "10.97.0.2")
	b := newNode(t, g, "rb", "noderb", "--no-connector", "--listen", "10.97.0.2:7420")
	b.start(t)
	b.cli("receive", logUUID, "--from", a.id, "--image", replica, "--size", "32M")
	a.cli("peer", "add", b.id, "--addr", "10.97.0.2:7420")

	// Every write to leg 1 (the resync's copies) waits 1.5 s.
	g.Run("dmsetup", "create", slow, "--table", fmt.Sprintf("0 %d delay %s 0 0 %s 0 1500", size/512, legB, legB))
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", slow) })
	table := fmt.Sprintf("0 %d mirror userspace 3 %s core %d 2 %s 0 /dev/mapper/%s 0 1 handle_errors",
		size/512, logUUID, regionSize/512, legA, slow)
	g.Run("dmsetup", "create", name, "--table", table)
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name) })
	a.cli("replicate", name, "--to", b.id)

	// The sender's first pass reads every region while the resync crawls.
	deadline := time.Now().Add(5 * time.Minute)
	for rawField(t, a.cli("status", "--raw"), "read") < size {
		if time.Now().After(deadline) {
			t.Fatalf("the sender did not read the volume in 5 minutes:\n%s", a.cli("status"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	before := mirrorSyncCount(t, g, name)
	if before+written >= regions {
		t.Fatalf("the kernel's resync (%d/%d regions) caught up with the sender: the window was not forced (slow leg 1 further)", before, regions)
	}
	want := make([]byte, written*regionSize)
	rand.Read(want)
	if err := guesttest.WriteDirect(mirror, (regions-written)*regionSize, want); err != nil {
		t.Fatal(err)
	}
	after := mirrorSyncCount(t, g, name)
	if after+written > regions {
		t.Fatalf("the resync reached the written regions during the write (%d/%d in sync): the window was not forced", after, regions)
	}
	fmt.Printf("wrote regions %d..%d with no MARK: the kernel had resynced %d..%d of %d regions, the sender had read them all\n",
		regions-written, regions-1, before, after, regions)

	for mirrorSyncCount(t, g, name) < regions {
		if time.Now().After(deadline.Add(5 * time.Minute)) {
			t.Fatalf("the kernel's resync did not finish: %s", g.Run("dmsetup", "status", name))
		}
		time.Sleep(time.Second)
	}
	a.cli("wait", name, "--timeout", "10m")
	for off := int64(0); off < size; off += regionSize {
		x, err := guesttest.ReadDirect(mirror, off, regionSize)
		if err != nil {
			t.Fatal(err)
		}
		y, err := guesttest.ReadDirect(replica, off, regionSize)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Fatalf("region %d: B's replica differs from the volume after the resync and `dmsync wait`: "+
				"a write made while the kernel resynced never reached B", off/regionSize)
		}
	}
	fmt.Println("every write made during the kernel's resync reached B: replica equals the volume")
}

// rawField returns the integer value of key= in `dmsync status --raw`.
func rawField(t *testing.T, status, key string) int64 {
	t.Helper()
	for _, f := range strings.Fields(status) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("status field %s=%q: %v", key, v, err)
			}
			return n
		}
	}
	t.Fatalf("status has no %s= field:\n%s", key, status)
	return 0
}

// mirrorSyncCount returns how many regions the kernel counts in sync, from
// `dmsetup status` ("0 N mirror 2 254:0 254:16 12/32 1 AS ...").
func mirrorSyncCount(t *testing.T, g *guesttest.G, name string) int64 {
	t.Helper()
	st := g.Run("dmsetup", "status", name)
	f := strings.Fields(st)
	for i, w := range f {
		if w != "mirror" || i+1 >= len(f) {
			continue
		}
		legs, err := strconv.Atoi(f[i+1])
		if err != nil || i+2+legs >= len(f) {
			break
		}
		n, _, ok := strings.Cut(f[i+2+legs], "/")
		if c, err := strconv.ParseInt(n, 10, 64); ok && err == nil {
			return c
		}
	}
	t.Fatalf("cannot read the sync count from dmsetup status %s: %q", name, st)
	return 0
}
