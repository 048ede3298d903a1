package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// TestVerifyScrubRepairOutput: bytes of B's image overwritten by hand are
// listed by verify (offset, length, human sizes, count) with exit 1, in
// text and JSON; --repair says how many regions are pending again and
// what to run next; after `dmsync wait` verify says equal and exits 0.
func TestVerifyScrubRepairOutput(t *testing.T) {
	b := newNodeEnv(t, freeAddr(t))
	a := newEnv(t)
	data := make([]byte, testSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	a.addVolume(t, data)
	img := b.dir + "/img"
	b.mustRun(t, "receive", "vol", "--from", a.id.ID, "--image", img, "--size", "2M")
	a.mustRun(t, "peer", "add", b.id.ID, "--addr", listenOf(b))
	a.mustRun(t, "replicate", "vol", "--to", b.id.ID, "--wait")
	if out := a.mustRun(t, "verify", "vol"); !strings.HasSuffix(out, "equal\n") {
		t.Fatalf("verify after sync: %q", out)
	}

	// 128 KiB at 512 KiB of B's image, behind B's index.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte{0x5a}, 128<<10)
	for i := range junk {
		junk[i] ^= data[512<<10+i]
	}
	if _, err := f.WriteAt(junk, 512<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()

	out, errOut, code := a.run("verify", "vol")
	if code != exitFailure || !strings.Contains(out, "differs: bytes [524288, 655360) offset 512K, length 128K\n") ||
		!strings.Contains(out, "1 ranges differ, 128K in all\n") || strings.Contains(out, "equal") ||
		!strings.Contains(errOut, "`dmsync verify vol --repair`") {
		t.Fatalf("verify of a changed replica: exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}

	out, _, code = a.run("verify", "vol", "--json", "--rate", "500M")
	var doc verifyJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != exitFailure {
		t.Fatalf("verify --json: exit %d, %v: %q", code, err, out)
	}
	if doc.Equal || len(doc.Differ) != 1 || doc.Differ[0] != (rangeJSON{Offset: 512 << 10, Length: 128 << 10}) ||
		doc.DifferBytes != 128<<10 || doc.ScrubbedBytes != testSize+1<<20 || doc.RegionSize != testRegion || doc.RepairedRegions != nil || doc.Index != nil {
		t.Fatalf("verify --json: %+v", doc)
	}

	out, errOut, code = a.run("verify", "vol", "--repair")
	if code != exitFailure || !strings.Contains(out, "repair: 2 regions of 64K pending again; run `dmsync wait vol`, then `dmsync verify vol`\n") ||
		!strings.Contains(errOut, "2 regions are pending again") {
		t.Fatalf("verify --repair: exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
	a.mustRun(t, "wait", "vol")
	out, _, code = a.run("verify", "vol", "--index")
	if code != exitOK || !strings.HasSuffix(out, "equal\n") || !strings.Contains(out, "replica root") {
		t.Fatalf("verify after repair and wait: exit %d: %q", code, out)
	}
	got, err := os.ReadFile(img)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("B's image differs from A's volume after repair (%v)", err)
	}

	for _, bad := range []string{"fast", "512K"} {
		if _, errOut, code := a.run("verify", "vol", "--rate", bad); code != exitUsage || !strings.Contains(errOut, "--rate") {
			t.Fatalf("verify --rate %s: exit %d, %q", bad, code, errOut)
		}
	}
}
