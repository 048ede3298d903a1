package dmtarget_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
)

const gib = 1 << 30

func newEnv() (*dmtarget.Builder, *dmtargettest.Fake, *dmtargettest.Host) {
	f := dmtargettest.New()
	h := dmtargettest.NewHost(f)
	h.Sizes["/dev/vdb"] = gib
	h.Sizes["/dev/vdc"] = gib
	h.Sizes["/dev/vdd"] = gib + 4096
	h.Sizes["/dev/tiny"] = 512 << 10
	h.Files["/etc/dmsync/key"] = true
	h.Files["/run/dmsync/dmsync.sock"] = true
	return &dmtarget.Builder{DM: f, Host: h, DaemonSocket: "/run/dmsync/dmsync.sock"}, f, h
}

func TestCreateOneDisk(t *testing.T) {
	b, f, _ := newEnv()
	p, err := b.Create(context.Background(), dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb", LogUUID: "U1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"info v", "info v-sink", "info v-sinkerr",
		"create v-sinkerr DMSYNC-SINKERR-U1", "load v-sinkerr : 0 2097152 error", "resume v-sinkerr",
		"create v-sink DMSYNC-SINK-U1", "load v-sink : 0 2097152 flakey 253:0 0 0 1 1 drop_writes", "resume v-sink",
		"create v DMSYNC-MIRROR-U1",
		"load v : 0 2097152 mirror userspace 5 U1 integrated_flush core 8192 nosync 2 /dev/vdb 0 253:1 0 1 handle_errors",
		"resume v",
	}
	if got := f.Calls(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantCmds := []string{
		"dmsetup create v-sinkerr --uuid DMSYNC-SINKERR-U1 --table '0 2097152 error'",
		"dmsetup create v-sink --uuid DMSYNC-SINK-U1 --table '0 2097152 flakey /dev/mapper/v-sinkerr 0 0 1 1 drop_writes'",
		"dmsetup create v --uuid DMSYNC-MIRROR-U1 --table '0 2097152 mirror userspace 5 U1 integrated_flush core 8192 nosync 2 /dev/vdb 0 /dev/mapper/v-sink 0 1 handle_errors'",
	}
	if got := p.Commands(); strings.Join(got, "\n") != strings.Join(wantCmds, "\n") {
		t.Fatalf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantCmds, "\n"))
	}
}

func TestCreateTwoDiskLUKS2CoreLog(t *testing.T) {
	b, f, h := newEnv()
	p, err := b.Create(context.Background(), dmtarget.VolumeSpec{
		Name: "v", Data: "/dev/vdb", Mirror: "/dev/vdc", Crypt: "luks2", KeyFile: "/etc/dmsync/key",
		Log: dmtarget.LogCore, RegionSize: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	d, ok := f.Device("v-mirror")
	if !ok || d.Live[0].Params != "core 1 128 2 /dev/vdb 0 /dev/vdc 0 1 handle_errors" {
		t.Fatalf("mirror %+v", d)
	}
	wantRuns := []string{
		"cryptsetup luksFormat --batch-mode --type luks2 --key-file /etc/dmsync/key /dev/mapper/v-mirror",
		"cryptsetup open --type luks2 --key-file /etc/dmsync/key /dev/mapper/v-mirror v",
	}
	if got := h.Runs(); strings.Join(got, "\n") != strings.Join(wantRuns, "\n") {
		t.Fatalf("runs %q", got)
	}
	if cmds := p.Commands(); len(cmds) != 3 || cmds[1] != wantRuns[0] || cmds[2] != wantRuns[1] {
		t.Fatalf("commands %q", cmds)
	}
	vols, err := b.List(context.Background())
	if err != nil || len(vols) != 1 {
		t.Fatalf("List = %+v, %v", vols, err)
	}
	v := vols[0]
	if v.Name != "v" || v.Mirror != "v-mirror" || v.Crypt != "luks2" || v.OneDisk || v.LogType != "core" ||
		v.RegionSectors != 128 || strings.Join(v.Devices, ",") != "v,v-mirror" || !v.Managed {
		t.Fatalf("volume %+v", v)
	}
}

// TestCreateRollback fails every step of every mode in turn and checks
// that nothing is left behind.
func TestCreateRollback(t *testing.T) {
	boom := errors.New("injected")
	for _, spec := range []dmtarget.VolumeSpec{
		{Name: "v", Data: "/dev/vdb"},
		{Name: "v", Data: "/dev/vdb", Mirror: "/dev/vdc"},
		{Name: "v", Data: "/dev/vdb", Crypt: "luks2", KeyFile: "/etc/dmsync/key"},
		{Name: "v", Data: "/dev/vdb", Mirror: "/dev/vdc", Crypt: "plain", KeyFile: "/etc/dmsync/key"},
	} {
		// A clean run tells the failure points: every dm create/load/resume
		// and every program run.
		b, f, h := newEnv()
		if _, err := b.Create(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
		var points []string
		for _, c := range f.Calls() {
			if op, rest, _ := strings.Cut(c, " "); op == "create" || op == "load" || op == "resume" {
				points = append(points, "dm "+op+" "+strings.Fields(rest)[0])
			}
		}
		for _, r := range h.Runs() {
			points = append(points, "run "+strings.Join(strings.Fields(r)[:2], " "))
		}
		for _, pt := range points {
			t.Run(fmt.Sprintf("%s-%s-%s", map[bool]string{true: "onedisk", false: "twodisk"}[spec.Mirror == ""], spec.Crypt, pt), func(t *testing.T) {
				b, f, h := newEnv()
				if k, ok := strings.CutPrefix(pt, "dm "); ok {
					f.FailOn(k, boom)
				} else {
					h.FailRun(strings.TrimPrefix(pt, "run "), boom)
				}
				_, err := b.Create(context.Background(), spec)
				if !errors.Is(err, boom) {
					t.Fatalf("err = %v, want the injected failure", err)
				}
				if left := f.Devices(); len(left) != 0 {
					t.Fatalf("left behind: %v (calls %q)", left, f.Calls())
				}
			})
		}
	}
}

func TestRollbackFailureNamesLeftovers(t *testing.T) {
	b, f, _ := newEnv()
	f.FailOn("resume v", errors.New("mirror failed"))
	f.FailOn("remove v-sink", errors.New("busy"))
	_, err := b.Create(context.Background(), dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb"})
	// v-sinkerr cannot go while v-sink uses it: both are named.
	if err == nil || !strings.Contains(err.Error(), "left dm device v-sink, dm device v-sinkerr behind") {
		t.Fatalf("err = %v", err)
	}
	if got := strings.Join(f.Devices(), ","); got != "v-sink,v-sinkerr" {
		t.Fatalf("devices %s", got)
	}
	for _, c := range f.Calls() {
		if c == "remove v" {
			return
		}
	}
	t.Fatalf("the rollback did not remove the mirror: %q", f.Calls())
}

func TestCreateValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  dmtarget.VolumeSpec
		setup func(*dmtargettest.Fake, *dmtargettest.Host)
		want  []string // substrings of the error
	}{
		{"missing device", dmtarget.VolumeSpec{Name: "v", Data: "/dev/nope"}, nil,
			[]string{"/dev/nope does not exist", "check the path"}},
		{"too small", dmtarget.VolumeSpec{Name: "v", Data: "/dev/tiny"}, nil,
			[]string{"/dev/tiny is 512K", "smaller than the 8M", "bigger device"}},
		{"legs differ", dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb", Mirror: "/dev/vdd"}, nil,
			[]string{"legs differ in size", "/dev/vdd is 1073745920 bytes", "equal size"}},
		{"same leg twice", dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb", Mirror: "/dev/vdb"}, nil,
			[]string{"same device as --data"}},
		{"mounted", dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb"}, func(f *dmtargettest.Fake, h *dmtargettest.Host) {
			h.InUse["/dev/vdb"] = "device 254:16 is mounted at /mnt: unmount it first (umount /mnt)"
		}, []string{"/dev/vdb is in use", "mounted at /mnt", "unmount"}},
		{"name exists", dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb"}, func(f *dmtargettest.Fake, h *dmtargettest.Host) {
			f.Create(context.Background(), "v-sink", "")
		}, []string{"device named v-sink already exists", "pick another volume name"}},
		{"region size", dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb", RegionSize: 3 << 20}, nil,
			[]string{"region size 3M is not a power of two", "--region-size 4M"}},
		{"daemon down", dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb"}, func(f *dmtargettest.Fake, h *dmtargettest.Host) {
			delete(h.Files, "/run/dmsync/dmsync.sock")
		}, []string{"dmsyncd is not running (no socket at /run/dmsync/dmsync.sock)", "systemctl start dmsyncd"}},
		{"key file missing", dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb", Crypt: "luks2", KeyFile: "/nokey"}, nil,
			[]string{"key file /nokey does not exist"}},
		{"crypt without key", dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb", Crypt: "plain"}, nil,
			[]string{"--crypt plain needs a key"}},
		{"bad name", dmtarget.VolumeSpec{Name: "a/b", Data: "/dev/vdb"}, nil,
			[]string{`volume name "a/b" has '/'`}},
		{"several at once", dmtarget.VolumeSpec{Name: "v", Data: "/dev/nope", Mirror: "/dev/tiny"}, nil,
			[]string{"/dev/nope does not exist", "/dev/tiny is 512K"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, f, h := newEnv()
			if tc.setup != nil {
				tc.setup(f, h)
			}
			before, calls := len(f.Devices()), len(f.Calls())
			_, err := b.Create(context.Background(), tc.spec)
			if !errors.Is(err, dmtarget.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if len(f.Devices()) != before {
				t.Fatalf("a rejected create changed devices: %v", f.Devices())
			}
			for _, c := range f.Calls()[calls:] {
				if strings.HasPrefix(c, "create ") {
					t.Fatalf("a rejected create made devices: %q", f.Calls())
				}
			}
		})
	}
}

func TestListStatusRemove(t *testing.T) {
	ctx := context.Background()
	b, f, h := newEnv()
	if _, err := b.Create(ctx, dmtarget.VolumeSpec{Name: "one", Data: "/dev/vdb", Crypt: "plain", KeyFile: "/etc/dmsync/key", LogUUID: "U1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, dmtarget.VolumeSpec{Name: "two", Data: "/dev/vdc", Mirror: "/dev/vdd", LogUUID: "U2"}); err == nil {
		t.Fatal("legs of different sizes accepted")
	}
	h.Sizes["/dev/vdd"] = gib
	if _, err := b.Create(ctx, dmtarget.VolumeSpec{Name: "two", Data: "/dev/vdc", Mirror: "/dev/vdd", LogUUID: "U2"}); err != nil {
		t.Fatal(err)
	}
	// A volume made by hand with dmsetup and a userspace log is listed too.
	f.Create(ctx, "byhand", "")
	f.Load(ctx, "byhand", []dmtarget.Target{{0, 2048, "mirror", "userspace 3 U3 core 1024 2 8:16 0 8:32 0"}})
	f.Resume(ctx, "byhand")
	vols, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vols {
		got = append(got, fmt.Sprintf("%s mirror=%s crypt=%s onedisk=%v uuid=%s managed=%v devs=%s",
			v.Name, v.Mirror, v.Crypt, v.OneDisk, v.LogUUID, v.Managed, strings.Join(v.Devices, ",")))
	}
	want := []string{
		"byhand mirror=byhand crypt= onedisk=false uuid=U3 managed=false devs=byhand",
		"one mirror=one-mirror crypt=plain onedisk=true uuid=U1 managed=true devs=one,one-mirror,one-sink,one-sinkerr",
		"two mirror=two crypt= onedisk=false uuid=U2 managed=true devs=two",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("List:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	st, err := b.Status(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mirror.Regions != 256 || st.Mirror.SyncRatio() != 1 || !st.Mirror.Healthy() || st.PendingRegions() != 0 {
		t.Fatalf("status %+v", st)
	}
	f.Update("two", true, func(d *dmtargettest.Device) { d.Status = []string{"2 8:32 8:48 100/256 1 DA 3 userspace U2 A"} })
	st, _ = b.Status(ctx, "two")
	if st.Mirror.Healthy() || st.Mirror.Legs[0].Health != dmtarget.LegWriteFailed || st.PendingRegions() != 156 {
		t.Fatalf("failed leg not reported: %+v", st)
	}

	f.Update("one", false, func(d *dmtargettest.Device) { d.OpenCount = 1 })
	if err := b.Remove(ctx, "one"); !errors.Is(err, dmtarget.ErrBusy) || !strings.Contains(err.Error(), "unmount") {
		t.Fatalf("Remove of a mounted volume: %v", err)
	}
	f.Update("one", false, func(d *dmtargettest.Device) { d.OpenCount = 0 })
	// The mirror held open by more than its crypt device (a replication
	// pass reading it): nothing is removed.
	f.Update("one-mirror", false, func(d *dmtargettest.Device) { d.OpenCount = 2 })
	if err := b.Remove(ctx, "one"); !errors.Is(err, dmtarget.ErrBusy) || !strings.Contains(err.Error(), "nothing was removed") {
		t.Fatalf("Remove with the mirror open elsewhere: %v", err)
	}
	if got := strings.Join(f.Devices(), ","); !strings.Contains(got, "one,") {
		t.Fatalf("a refused remove removed devices: %s", got)
	}
	f.Update("one-mirror", false, func(d *dmtargettest.Device) { d.OpenCount = 0 })
	// A remove that stopped after the crypt device (the mirror was opened
	// in between) leaves a volume that is still found by its name.
	if err := f.Remove(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Find(ctx, "one"); err != nil || strings.Join(v.Devices, ",") != "one-mirror,one-sink,one-sinkerr" {
		t.Fatalf("Find of a half-removed volume: %+v, %v", v, err)
	}
	if err := b.Remove(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, "two"); err != nil {
		t.Fatal(err)
	}
	h.Sizes["/dev/vde"] = gib
	if _, err := b.Create(ctx, dmtarget.VolumeSpec{Name: "three", Data: "/dev/vde", Crypt: "plain", KeyFile: "/etc/dmsync/key", LogUUID: "U4"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, "three"); err != nil {
		t.Fatal(err)
	}
	if r := h.Runs(); !slices.Contains(r, "cryptsetup close three") {
		t.Fatalf("crypt not closed with cryptsetup: %q", r)
	}
	if got := strings.Join(f.Devices(), ","); got != "byhand" {
		t.Fatalf("after remove: %s", got)
	}
	if err := b.Remove(ctx, "nope"); !errors.Is(err, dmtarget.ErrNoVolume) || !strings.Contains(err.Error(), "dmsync volume list") {
		t.Fatalf("Remove(nope): %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"4096": 4096, "64K": 64 << 10, "4M": 4 << 20, "4MiB": 4 << 20, "1g": 1 << 30, "8s": 4096} {
		if got, err := dmtarget.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1", "4X", "M", "99999999999999999999T"} {
		if _, err := dmtarget.ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
}
