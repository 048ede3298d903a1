package demo

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/guesttest"
	"github.com/dmsync/dmsync/rpc"
)

// TestKernelScrubRepair: after `dmsync wait`, 1 MiB of B's image is
// overwritten by hand (dd from /dev/urandom), behind B's index. `dmsync
// verify` lists exactly that range and exits non-zero; `verify --repair`
// makes its regions pending; after `dmsync wait`, verify says equal and B's
// image equals A's volume byte for byte. It prints verify's read rate next
// to a plain dd read of the image (no timed assertion).
func TestKernelScrubRepair(t *testing.T) {
	g := guesttest.Require(t)
	legA, legB, replica := g.WipeDisk(0), g.WipeDisk(1), g.WipeDisk(2)
	const size = 64 << 20
	const name, logUUID = "scrub", "dmsync-scrub"
	const badOff, badLen = 17 << 20, 1 << 20
	mirror := "/dev/mapper/" + name

	a := newNode(t, g, "sa", "")
	a.start(t)
	makeNetns(t, g, "nodesb", "10.97.0.1", "10.97.0.2")
	b := newNode(t, g, "sb", "nodesb", "--no-connector", "--listen", "10.97.0.2:7420")
	b.start(t)
	b.cli("receive", logUUID, "--from", a.id, "--image", replica, "--size", "64M")

	table := fmt.Sprintf("0 %d mirror userspace 4 %s core 1024 nosync 2 %s 0 %s 0 1 handle_errors", size/512, logUUID, legA, legB)
	g.Run("dmsetup", "create", name, "--table", table)
	t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name) })
	for i := 0; i < 64; i++ {
		off, _ := rand.Int(rand.Reader, big.NewInt(size/(64<<10)))
		data := make([]byte, 64<<10)
		rand.Read(data)
		if err := guesttest.WriteDirect(mirror, off.Int64()*(64<<10), data); err != nil {
			t.Fatal(err)
		}
	}
	a.cli("peer", "add", b.id, "--addr", "10.97.0.2:7420")
	a.cli("replicate", name, "--to", b.id)
	a.cli("wait", name, "--timeout", "10m")
	if out := a.cli("verify", name); lastLine(out) != "equal" {
		t.Fatalf("verify after wait: %q", out)
	}

	// By hand, on B: 1 MiB of random bytes at 17 MiB.
	g.Run("dd", "if=/dev/urandom", "of="+replica, "bs=1M", fmt.Sprintf("seek=%d", badOff>>20), "count=1",
		"iflag=fullblock", "oflag=direct", "conv=notrunc,fsync")
	verify := func(args ...string) (string, error) {
		return g.Try(g.Bin("dmsync"), append([]string{"--socket", a.socket, "verify", name}, args...)...)
	}
	wantLine := fmt.Sprintf("differs: bytes [%d, %d) offset 17M, length 1M\n", badOff, badOff+badLen)
	out, err := verify()
	fmt.Printf("verify after dd on B:\n%s(%v)\n", out, err)
	if err == nil || !strings.Contains(out, wantLine) || !strings.Contains(out, "1 ranges differ, 1M in all\n") {
		t.Fatalf("verify after 1 MiB of B's image was overwritten: want exactly %q and a non-zero exit; got %v:\n%s", wantLine, err, out)
	}

	out, err = verify("--repair")
	fmt.Printf("verify --repair:\n%s(%v)\n", out, err)
	if err == nil || !strings.Contains(out, wantLine) || !strings.Contains(out, "repair: 2 regions of 512K pending again") {
		t.Fatalf("verify --repair: want the range and 2 regions of 512K pending again; got %v:\n%s", err, out)
	}
	a.cli("wait", name, "--timeout", "10m")
	t0 := time.Now()
	out, err = verify()
	wall := time.Since(t0)
	fmt.Printf("verify after repair and wait:\n%s(%v)\n", out, err)
	if err != nil || lastLine(out) != "equal" {
		t.Fatalf("verify after repair and wait: %v:\n%s", err, out)
	}
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
			t.Fatalf("B's image differs from A's volume in [%d, %d) after repair", off, off+4<<20)
		}
	}

	// Speed, as ratios (no assertion): verify's read of B's image, at the
	// default rate bound and unbounded, against a plain dd of the image.
	scrubRate := func(out string) float64 {
		m := regexp.MustCompile(`peer: \S+ in ([0-9.]+)s`).FindStringSubmatch(out)
		if m == nil {
			return 0
		}
		s, _ := strconv.ParseFloat(m[1], 64)
		if s <= 0 {
			return 0
		}
		return size / s
	}
	t0 = time.Now()
	fast, err := verify("--rate", "100G")
	fastWall := time.Since(t0)
	if err != nil {
		t.Fatalf("verify --rate 100G: %v", err)
	}
	t0 = time.Now()
	g.Run("dd", "if="+replica, "of=/dev/null", "bs=1M", "count=64", "iflag=direct")
	ddRate := size / time.Since(t0).Seconds()
	// What bounds verify here: BLAKE3 on this (emulated) CPU, one core.
	buf := make([]byte, 16<<20)
	t0 = time.Now()
	for range 4 {
		rpc.Sum(buf)
	}
	hashRate := float64(len(buf)*4) / time.Since(t0).Seconds()
	mib := float64(1 << 20)
	def, unb := scrubRate(out), scrubRate(fast)
	fmt.Printf("scrub speed (64 MiB image): plain dd read %.1f MiB/s; verify (default bound 200M/s): scrub %.1f MiB/s = %.3f of dd, whole command %.1f MiB/s; verify --rate 100G: scrub %.1f MiB/s = %.3f of dd, whole command %.1f MiB/s; BLAKE3 on one core of this guest %.1f MiB/s\n",
		ddRate/mib, def/mib, def/ddRate, size/wall.Seconds()/mib, unb/mib, unb/ddRate, size/fastWall.Seconds()/mib, hashRate/mib)
}
