package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
	"github.com/dmsync/dmsync/internal/admin"
)

// repairVM is the volume manager dmsyncd serves: the builder with repair.
type repairVM struct {
	*dmtarget.Builder
	legs *dmtarget.Legs
}

func (r repairVM) Repair(ctx context.Context, req dmtarget.RepairRequest) (dmtarget.LegFailure, error) {
	return r.legs.Repair(ctx, req)
}

func TestVolumeRepairCommand(t *testing.T) {
	ctx := context.Background()
	f := dmtargettest.New()
	h := dmtargettest.NewHost(f)
	for _, d := range []string{"/dev/vdb", "/dev/vdc", "/dev/vdd"} {
		h.Sizes[d] = 1 << 30
	}
	recs := &dmtarget.MemRecords{}
	b := &dmtarget.Builder{DM: f, Host: h, Records: recs}
	legs := &dmtarget.Legs{Builder: b, Records: recs}
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	ln, err := admin.Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	admin.Register(g, admin.NewServer(repairVM{b, legs}, nil))
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	run1 := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		err := run(ctx, append([]string{"--socket", sock}, args...), &out, &errb)
		if err != nil {
			out.WriteString("dmsync: " + err.Error() + "\n")
		}
		return out.String(), exitCode(err)
	}
	if out, code := run1("volume", "create", "v", "--data", "/dev/vdb", "--mirror", "/dev/vdc"); code != 0 {
		t.Fatalf("create: %d %s", code, out)
	}
	if out, code := run1("volume", "repair", "v", "--mirror", "/dev/vdd"); code != exitUsage || !strings.Contains(out, "volume v is healthy (legs AA): nothing to repair") {
		t.Fatalf("repair of a healthy volume: %d %q", code, out)
	}
	if out, code := run1("volume", "repair", "v"); code != exitUsage || !strings.Contains(out, "give exactly one of --mirror DEV") {
		t.Fatalf("repair without a device: %d %q", code, out)
	}
	if out, code := run1("volume", "repair", "nope", "--mirror", "/dev/vdd"); code != exitNoVolume || !strings.Contains(out, "no volume named nope") {
		t.Fatalf("repair of no volume: %d %q", code, out)
	}
	f.Update("v", true, func(d *dmtargettest.Device) {
		d.Status = []string{"2 /dev/vdb /dev/vdc 256/256 1 AD 3 dmsync 256/256 0"}
	})
	_, st, _ := f.Status(ctx, "v")
	legs.Check(ctx, "v", st)
	out, code := run1("volume", "status", "v")
	// A degraded volume is a problem: status exits 1, as zpool status -x.
	for _, w := range []string{"state:       DEGRADED: leg 1 /dev/vdc failed (write failed)", "repair v --mirror NEWDEV", "failed leg:  /dev/vdc (leg 1, write-failed)", "two-disk"} {
		if code != exitFailure || !strings.Contains(out, w) {
			t.Errorf("degraded status lacks %q:\n%s", w, out)
		}
	}
	out, code = run1("volume", "repair", "v", "--mirror", "/dev/vdd")
	if code != 0 || !strings.Contains(out, "repairing volume v: /dev/vdd replaces /dev/vdc") || !strings.Contains(out, "resyncing") {
		t.Fatalf("repair: %d %s", code, out)
	}
	if out, code = run1("volume", "status", "v"); !strings.Contains(out, "DEGRADED, resyncing: /dev/vdd replaces /dev/vdc") {
		t.Errorf("status while resyncing:\n%s", out)
	}
	_, st, _ = f.Status(ctx, "v") // the fake reports the new table in sync
	legs.Check(ctx, "v", st)
	if out, code = run1("volume", "status", "v"); code != 0 || !strings.Contains(out, "state:       healthy") {
		t.Errorf("status after the resync:\n%s", out)
	}
}
