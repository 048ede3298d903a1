package dmtarget_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
)

func ms(t *testing.T, s string) dmtarget.MirrorStatus {
	t.Helper()
	st, err := dmtarget.ParseMirrorStatus(s)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestDecideLegAction(t *testing.T) {
	degraded := &dmtarget.LegFailure{State: dmtarget.StateDegraded}
	resync := &dmtarget.LegFailure{State: dmtarget.StateResyncing}
	resync1 := &dmtarget.LegFailure{State: dmtarget.StateResyncing, OneDisk: true}
	dataFailed := &dmtarget.LegFailure{State: dmtarget.StateDataFailed}
	readErr := &dmtarget.LegFailure{State: dmtarget.StateReadErrors}
	for _, tc := range []struct {
		name    string
		oneDisk bool
		status  string
		rec     *dmtarget.LegFailure
		want    dmtarget.LegAction
		leg     int
	}{
		{"two healthy", false, "2 a b 10/10 1 AA 1 core", nil, dmtarget.ActNone, 0},
		{"two, leg 1 write failed", false, "2 a b 10/10 1 AD 1 core", nil, dmtarget.ActDegrade, 1},
		{"two, leg 0 write failed", false, "2 a b 10/10 1 DA 1 core", nil, dmtarget.ActDegrade, 0},
		{"two, leg 0 read failed", false, "2 a b 10/10 1 RA 1 core", nil, dmtarget.ActDegrade, 0},
		{"two, leg 1 flush failed", false, "2 a b 10/10 1 AF 1 core", nil, dmtarget.ActDegrade, 1},
		{"two, leg 1 resync failed", false, "2 a b 3/10 1 AS 1 core", nil, dmtarget.ActDegrade, 1},
		{"two, both write failed", false, "2 a b 10/10 1 DD 1 core", nil, dmtarget.ActFailData, 0},
		{"two, read-failed leg 0 keeps writes, leg 1 dead", false, "2 a b 10/10 1 RD 1 core", nil, dmtarget.ActDegrade, 1},
		{"two, leg 0 dead, leg 1 read failed", false, "2 a b 10/10 1 DR 1 core", nil, dmtarget.ActDegrade, 0},
		{"two, both read failed", false, "2 a b 10/10 1 RR 1 core", nil, dmtarget.ActReadErrors, 0},
		{"two, both read failed, recorded", false, "2 a b 10/10 1 RR 1 core", readErr, dmtarget.ActNone, 0},
		{"degraded, sink read failed", false, "2 a s 10/10 1 AR 1 core", degraded, dmtarget.ActNone, 0},
		{"degraded, in sync", false, "2 a s 10/10 1 AA 1 core", degraded, dmtarget.ActNone, 0},
		{"degraded, survivor fails", false, "2 a s 10/10 1 DA 1 core", degraded, dmtarget.ActFailData, 0},
		{"resyncing, not done", false, "2 a n 4/10 1 AA 1 core", resync, dmtarget.ActNone, 0},
		{"resyncing, done", false, "2 a n 10/10 1 AA 1 core", resync, dmtarget.ActRepairDone, 0},
		{"resyncing, new leg fails", false, "2 a n 4/10 1 AD 1 core", resync, dmtarget.ActDegrade, 1},
		{"resyncing, survivor fails", false, "2 a n 4/10 1 DA 1 core", resync, dmtarget.ActFailData, 0},
		{"one healthy", true, "2 a s 10/10 1 AA 1 core", nil, dmtarget.ActNone, 0},
		{"one, data write failed", true, "2 a s 10/10 1 DA 1 core", nil, dmtarget.ActFailData, 0},
		{"one, data flush failed", true, "2 a s 10/10 1 FA 1 core", nil, dmtarget.ActFailData, 0},
		{"one, data read failed", true, "2 a s 10/10 1 RR 1 core", nil, dmtarget.ActReadErrors, 0},
		{"one, read failure already recorded", true, "2 a s 10/10 1 RR 1 core", readErr, dmtarget.ActNone, 0},
		{"one, read failure then writes fail", true, "2 a s 10/10 1 DR 1 core", readErr, dmtarget.ActFailData, 0},
		{"one, sink alone failed", true, "2 a s 10/10 1 AR 1 core", nil, dmtarget.ActNone, 0},
		{"one, repaired and in sync", true, "2 a s 10/10 1 AA 1 core", resync1, dmtarget.ActRepairDone, 0},
		{"one, repaired, syncing", true, "2 a s 8/10 1 AA 1 core", resync1, dmtarget.ActNone, 0},
		{"data failed: nothing more", true, "2 a s 10/10 1 DA 1 core", dataFailed, dmtarget.ActNone, 0},
	} {
		d := dmtarget.DecideLegAction(tc.oneDisk, ms(t, tc.status), tc.rec)
		if d.Action != tc.want || (d.Action != dmtarget.ActNone && d.Action != dmtarget.ActRepairDone && d.Leg != tc.leg) {
			t.Errorf("%s: %q: got %v leg %d, want %v leg %d", tc.name, tc.status, d.Action, d.Leg, tc.want, tc.leg)
		}
	}
}

// legsEnv is a fake system with dmsyncd's leg watcher.
type legsEnv struct {
	b      *dmtarget.Builder
	f      *dmtargettest.Fake
	h      *dmtargettest.Host
	legs   *dmtarget.Legs
	recs   *dmtarget.MemRecords
	mu     sync.Mutex
	events []dmtarget.LegEvent
	pended []string
}

func newLegsEnv(t *testing.T) *legsEnv {
	b, f, h := newEnv()
	e := &legsEnv{b: b, f: f, h: h, recs: &dmtarget.MemRecords{}}
	b.Records = e.recs
	e.legs = &dmtarget.Legs{
		Builder: b, Records: e.recs, Rescan: 20 * time.Millisecond,
		Now: func() time.Time { return time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC) },
		OnEvent: func(ev dmtarget.LegEvent) {
			e.mu.Lock()
			e.events = append(e.events, ev)
			e.mu.Unlock()
		},
		PendAll: func(uuid string) error {
			e.mu.Lock()
			e.pended = append(e.pended, uuid)
			e.mu.Unlock()
			return nil
		},
	}
	return e
}

func (e *legsEnv) kinds() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ks []string
	for _, ev := range e.events {
		ks = append(ks, string(ev.Kind))
	}
	return ks
}

// setStatus makes the fake report a mirror status and raises an event.
func (e *legsEnv) setStatus(t *testing.T, name, st string) {
	t.Helper()
	if err := e.f.Update(name, true, func(d *dmtargettest.Device) { d.Status = []string{st} }); err != nil {
		t.Fatal(err)
	}
}

func (e *legsEnv) check(t *testing.T, name string) bool {
	t.Helper()
	_, st, err := e.f.Status(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return e.legs.Check(context.Background(), name, st)
}

func liveParams(t *testing.T, f *dmtargettest.Fake, name string) string {
	t.Helper()
	d, ok := f.Device(name)
	if !ok || len(d.Live) != 1 {
		t.Fatalf("%s: %+v", name, d)
	}
	return d.Live[0].Type + " " + d.Live[0].Params
}

func callsSince(f *dmtargettest.Fake, n int, prefixes ...string) []string {
	var out []string
	for _, c := range f.Calls()[n:] {
		for _, p := range prefixes {
			if strings.HasPrefix(c, p) {
				out = append(out, c)
			}
		}
	}
	return out
}

func TestLegsTwoDiskDegradeAndRepair(t *testing.T) {
	ctx := context.Background()
	e := newLegsEnv(t)
	if _, err := e.b.Create(ctx, dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb", Mirror: "/dev/vdc", LogUUID: "U2"}); err != nil {
		t.Fatal(err)
	}
	if !e.check(t, "v") || len(e.kinds()) != 0 {
		t.Fatalf("healthy volume: events %v", e.kinds())
	}
	// Leg 0 fails writes: the survivor becomes leg 0, a sink leg 1, and the
	// reload suspends without flush (held writes are re-queued).
	e.setStatus(t, "v", "2 /dev/vdb /dev/vdc 256/256 1 DA 3 dmsync 256/256 3")
	n := len(e.f.Calls())
	if !e.check(t, "v") {
		t.Fatal("stopped watching a degraded volume")
	}
	got := callsSince(e.f, n, "create", "load", "suspend", "resume")
	want := []string{
		"create v-sinkerr DMSYNC-SINKERR-U2", "load v-sinkerr : 0 2097152 error", "resume v-sinkerr",
		"create v-sink DMSYNC-SINK-U2", "load v-sink : 0 2097152 flakey 253:1 0 0 1 1 drop_writes", "resume v-sink",
		"load v : 0 2097152 mirror userspace 4 U2 integrated_flush core 8192 2 /dev/vdc 0 253:2 0 1 handle_errors",
		"suspend v noflush nolockfs", "resume v",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("degrade calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	rec, _ := e.recs.Get("U2")
	if rec == nil || rec.State != dmtarget.StateDegraded || rec.FailedDev != "/dev/vdb" || rec.FailedLeg != 0 || rec.Health != "D" || !rec.NeedsFullResync || rec.Survivor != "/dev/vdc" {
		t.Fatalf("record %+v", rec)
	}
	vs, err := e.b.Status(ctx, "v")
	if err != nil || vs.Failure == nil || !strings.Contains(vs.Failure.Summary(), "DEGRADED: leg 0 /dev/vdb failed (write failed)") ||
		!strings.Contains(vs.Failure.Summary(), "dmsync volume repair v --mirror NEWDEV") {
		t.Fatalf("status %+v %v", vs.Failure, err)
	}
	if k := e.kinds(); len(k) != 1 || k[0] != "degraded" {
		t.Fatalf("events %v", k)
	}
	// In sync on the sink: nothing more to do (logd itself makes regions
	// written while out of sync pending).
	e.check(t, "v")
	if len(e.pended) != 0 {
		t.Fatalf("PendAll calls %v after a degrade", e.pended)
	}

	// Mistakes first: each names the thing and the fix.
	e.h.InUse["/dev/vdd"] = "mounted at /srv"
	e.h.Sizes["/dev/small"] = gib - 4096
	for _, tc := range []struct {
		req  dmtarget.RepairRequest
		want string
	}{
		{dmtarget.RepairRequest{Name: "v"}, "give the new device: --mirror DEV"},
		{dmtarget.RepairRequest{Name: "v", Mirror: "/dev/vdd", Data: "/dev/vdd"}, "either --mirror or --data"},
		{dmtarget.RepairRequest{Name: "v", Mirror: "/dev/vdd"}, "/dev/vdd is in use: mounted at /srv"},
		{dmtarget.RepairRequest{Name: "v", Mirror: "/dev/small"}, "smaller than the volume's 1073741824 bytes: use a device of at least that size"},
		{dmtarget.RepairRequest{Name: "v", Mirror: "/dev/none"}, "/dev/none does not exist"},
		{dmtarget.RepairRequest{Name: "v", Mirror: "vdd"}, "is not a path"},
		{dmtarget.RepairRequest{Name: "v", Data: "/dev/vdd"}, "has not failed (state degraded)"},
		{dmtarget.RepairRequest{Name: "nope", Mirror: "/dev/vdd"}, "no volume named nope"},
	} {
		_, err := e.legs.Repair(ctx, tc.req)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("repair %+v: %v, want one line with %q", tc.req, err, tc.want)
		}
		if err != nil && !errors.Is(err, dmtarget.ErrInvalid) && !errors.Is(err, dmtarget.ErrNoVolume) {
			t.Errorf("repair %+v: %v is neither ErrInvalid nor ErrNoVolume", tc.req, err)
		}
	}
	delete(e.h.InUse, "/dev/vdd")
	// A load that fails while the old table is suspended resumes the old one.
	e.f.FailOn("load v", errors.New("EINVAL"))
	if _, err := e.legs.Repair(ctx, dmtarget.RepairRequest{Name: "v", Mirror: "/dev/vdd"}); err == nil || !strings.Contains(err.Error(), "the old table is live again") {
		t.Fatalf("repair with a failing load: %v", err)
	}
	if d, _ := e.f.Device("v"); d.Suspended || !strings.Contains(liveParams(t, e.f, "v"), "2 /dev/vdc 0 253:2 0") {
		t.Fatalf("after a failed repair load: suspended %v, table %s", d.Suspended, liveParams(t, e.f, "v"))
	}
	if r, _ := e.recs.Get("U2"); r == nil || r.State != dmtarget.StateDegraded {
		t.Fatalf("record after a failed repair: %+v", r)
	}
	n = len(e.f.Calls())
	rec2, err := e.legs.Repair(ctx, dmtarget.RepairRequest{Name: "v", Mirror: "/dev/vdd"})
	if err != nil {
		t.Fatal(err)
	}
	got = callsSince(e.f, n, "load", "suspend", "resume", "remove")
	want = []string{
		// sync: logd fills the in-sync bits with 0 for a new table: a full
		// resync. The old table is suspended first, so it cannot mark
		// regions in sync that the new leg never got.
		"suspend v noflush nolockfs",
		"load v : 0 2097152 mirror userspace 5 U2 integrated_flush core 8192 sync 2 /dev/vdc 0 /dev/vdd 0 1 handle_errors",
		"resume v", "remove v-sink", "remove v-sinkerr",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("repair calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rec2.State != dmtarget.StateResyncing || rec2.RepairDev != "/dev/vdd" {
		t.Fatalf("after repair: %+v", rec2)
	}
	if _, err := e.legs.Repair(ctx, dmtarget.RepairRequest{Name: "v", Mirror: "/dev/vdc"}); err == nil || !strings.Contains(err.Error(), "already resyncing onto /dev/vdd") {
		t.Fatalf("second repair: %v", err)
	}
	// Resyncing: status stays DEGRADED until the kernel says in sync.
	e.setStatus(t, "v", "2 /dev/vdc /dev/vdd 100/256 1 AA 3 dmsync 100/256 3")
	e.check(t, "v")
	if r, _ := e.recs.Get("U2"); r == nil || r.State != dmtarget.StateResyncing {
		t.Fatalf("record while resyncing: %+v", r)
	}
	e.setStatus(t, "v", "2 /dev/vdc /dev/vdd 256/256 1 AA 3 dmsync 256/256 3")
	e.check(t, "v")
	if r, _ := e.recs.Get("U2"); r != nil {
		t.Fatalf("record after the resync: %+v", r)
	}
	if len(e.pended) != 0 {
		t.Fatalf("PendAll calls %v after a --mirror repair", e.pended)
	}
	if _, err := e.legs.Repair(ctx, dmtarget.RepairRequest{Name: "v", Mirror: "/dev/vdd"}); !errors.Is(err, dmtarget.ErrNotDegraded) || !strings.Contains(err.Error(), "volume v is healthy (legs AA): nothing to repair") {
		t.Fatalf("repair of a healthy volume: %v", err)
	}
	if k := e.kinds(); strings.Join(k, " ") != "degraded repair-started repaired" {
		t.Fatalf("events %v", k)
	}
}

func TestLegsOneDiskDataFailed(t *testing.T) {
	ctx := context.Background()
	e := newLegsEnv(t)
	if _, err := e.b.Create(ctx, dmtarget.VolumeSpec{Name: "v", Data: "/dev/vdb", LogUUID: "U1", Crypt: "plain", KeyFile: "/etc/dmsync/key"}); err != nil {
		t.Fatal(err)
	}
	mirror := "v-mirror"
	e.setStatus(t, mirror, "2 /dev/vdb 253:1 256/256 1 DA 3 dmsync 256/256 1")
	n := len(e.f.Calls())
	if e.check(t, mirror) {
		t.Fatal("still watching a mirror reloaded to error")
	}
	got := callsSince(e.f, n, "load", "suspend", "resume")
	want := []string{"load v-mirror : 0 2097152 error", "suspend v-mirror nolockfs", "resume v-mirror"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("fail-data calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	vs, err := e.b.Status(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	if !vs.DataFailed || vs.Failure == nil || vs.Failure.State != dmtarget.StateDataFailed || !vs.OneDisk || vs.Crypt != "plain" ||
		!strings.Contains(vs.Failure.Summary(), "DATA DISK FAILED: /dev/vdb failed (write failed)") || !strings.Contains(vs.Failure.Summary(), "peer's replica") {
		t.Fatalf("status %+v failure %+v", vs, vs.Failure)
	}
	if _, err := e.legs.Repair(ctx, dmtarget.RepairRequest{Name: "v", Mirror: "/dev/vdc"}); err == nil || !strings.Contains(err.Error(), "--data NEWDEV") {
		t.Fatalf("--mirror on a failed data disk: %v", err)
	}
	n = len(e.f.Calls())
	rec, err := e.legs.Repair(ctx, dmtarget.RepairRequest{Name: "v", Data: "/dev/vdc"})
	if err != nil {
		t.Fatal(err)
	}
	got = callsSince(e.f, n, "load", "suspend", "resume")
	want = []string{
		"load v-mirror : 0 2097152 mirror userspace 4 U1 integrated_flush core 8192 2 /dev/vdc 0 253:1 0 1 handle_errors",
		"suspend v-mirror noflush nolockfs", "resume v-mirror",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("repair calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rec.State != dmtarget.StateResyncing || len(e.pended) != 1 || e.pended[0] != "U1" {
		t.Fatalf("record %+v, PendAll %v: want resyncing, every region of U1 pending", rec, e.pended)
	}
	if !e.check(t, mirror) {
		t.Fatal("not watching the repaired mirror")
	}
	if r, _ := e.recs.Get("U1"); r != nil || len(e.pended) != 1 {
		t.Fatalf("after the repair: record %+v, PendAll %v", r, e.pended)
	}
	if k := e.kinds(); strings.Join(k, " ") != "data-failed repair-started repaired" {
		t.Fatalf("events %v", k)
	}
}

func TestLegsRepairNotAVolume(t *testing.T) {
	ctx := context.Background()
	e := newLegsEnv(t)
	mk := func(name, table string) {
		ts, _ := dmtarget.ParseTable(table)
		e.f.Create(ctx, name, "")
		e.f.Load(ctx, name, ts)
		e.f.Resume(ctx, name)
	}
	mk("lin", "0 2048 zero")
	mk("corem", "0 2048 mirror core 2 1024 nosync 2 /dev/vdb 0 /dev/vdc 0 1 handle_errors")
	if _, err := e.legs.Repair(ctx, dmtarget.RepairRequest{Name: "lin", Mirror: "/dev/vdd"}); !errors.Is(err, dmtarget.ErrNoVolume) || !strings.Contains(err.Error(), "dm device lin is not a dmsync volume") {
		t.Errorf("repair of a zero device: %v", err)
	}
	if _, err := e.f.Info(ctx, "corem"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.legs.Repair(ctx, dmtarget.RepairRequest{Name: "corem", Mirror: "/dev/vdd"}); err == nil {
		t.Errorf("repair of a core-log mirror: accepted")
	} else {
		t.Logf("core-log mirror: %v", err)
	}
}

// TestLegsRunWatches: the watcher finds a new mirror and acts on its dm
// event without being asked.
func TestLegsRunWatches(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	e := newLegsEnv(t)
	done := make(chan error)
	go func() { done <- e.legs.Run(ctx) }()
	if _, err := e.b.Create(ctx, dmtarget.VolumeSpec{Name: "w", Data: "/dev/vdb", Mirror: "/dev/vdc", LogUUID: "UW"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the watcher found it
	e.setStatus(t, "w", "2 /dev/vdb /dev/vdc 256/256 1 AD 3 dmsync 256/256 0")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _ := e.recs.Get("UW"); r != nil && r.State == dmtarget.StateDegraded && strings.Contains(r.Note, "running on") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no degrade after the event; calls %v", e.f.Calls())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p := liveParams(t, e.f, "w"); !strings.Contains(p, " 2 /dev/vdb 0 253:") {
		t.Fatalf("live table %s", p)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestFileRecords(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "legs")
	r := &dmtarget.FileRecords{Dir: dir}
	if rec, err := r.Get("U"); rec != nil || err != nil {
		t.Fatalf("empty: %v %v", rec, err)
	}
	at := time.Date(2026, 12, 2, 1, 2, 3, 0, time.UTC)
	in := dmtarget.LegFailure{Volume: "v", Mirror: "v", LogUUID: "U", State: dmtarget.StateDegraded, FailedDev: "254:16", FailedPath: "/dev/vdb", Health: "D", At: at, NeedsFullResync: true}
	if err := r.Put(in); err != nil {
		t.Fatal(err)
	}
	// A second store over the same directory: as after a restart.
	got, err := (&dmtarget.FileRecords{Dir: dir}).Get("U")
	if err != nil || got == nil || got.FailedName() != "/dev/vdb (254:16)" || !got.At.Equal(at) || got.State != dmtarget.StateDegraded {
		t.Fatalf("read back %+v %v", got, err)
	}
	if err := r.Put(dmtarget.LegFailure{LogUUID: "../x"}); err == nil {
		t.Fatal("a uuid with a slash named a file")
	}
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o600)
	all, err := r.All()
	if len(all) != 1 || err == nil || !strings.Contains(err.Error(), "bad.json is damaged") || !strings.Contains(err.Error(), "fix or remove the file") {
		t.Fatalf("All: %+v %v", all, err)
	}
	if err := r.Delete("U"); err != nil {
		t.Fatal(err)
	}
	if rec, _ := r.Get("U"); rec != nil {
		t.Fatal("record after Delete")
	}
}
