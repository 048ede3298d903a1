package dmtargettest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/dmtarget"
)

// RunSuite checks that dm behaves like device-mapper for the calls dmsync
// makes. It runs on the Fake always and on the real ioctl wrapper in the
// guest, so the two cannot drift apart. It only uses targets that need no
// backing device (error, zero) and names starting with prefix; it removes
// what it creates.
func RunSuite(t *testing.T, dm dmtarget.DM, prefix string) {
	ctx := context.Background()
	name := prefix + "suite0"
	uuid := "DMSYNC-TEST-" + prefix + "suite0"
	t.Cleanup(func() { _ = dm.Remove(ctx, name) })

	if v, err := dm.Version(ctx); err != nil || v[0] != 4 {
		t.Fatalf("Version = %v, %v; want major 4", v, err)
	}
	info, err := dm.Create(ctx, name, uuid)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if info.Name != name || info.UUID != uuid || info.ActivePresent {
		t.Fatalf("Create info = %+v", info)
	}
	if _, err := dm.Create(ctx, name, ""); !errors.Is(err, dmtarget.ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	table := []dmtarget.Target{
		{Start: 0, Length: 2048, Type: "zero"},
		{Start: 2048, Length: 1024, Type: "error"},
	}
	if err := dm.Load(ctx, name, table); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if info, err = dm.Info(ctx, name); err != nil || !info.InactivePresent || info.ActivePresent {
		t.Fatalf("Info after Load = %+v, %v; want only an inactive table", info, err)
	}
	ev := info.EventNr
	if info, err = dm.Resume(ctx, name); err != nil || info.Suspended {
		t.Fatalf("Resume = %+v, %v", info, err)
	}
	_, live, err := dm.Table(ctx, name)
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	if len(live) != 2 || live[0].Type != "zero" || live[1].Type != "error" || live[1].Start != 2048 || live[1].Length != 1024 {
		t.Fatalf("Table = %+v, want %+v", live, table)
	}
	info, st, err := dm.Status(ctx, name)
	if err != nil || len(st) != 2 || info.TargetCount != 2 {
		t.Fatalf("Status = %+v %+v, %v", info, st, err)
	}
	found := false
	names, err := dm.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, n := range names {
		if n.Name == name {
			found = true
			if n.UUID != "" && n.UUID != uuid {
				t.Errorf("List uuid %q, want %q", n.UUID, uuid)
			}
			if n.Major != info.Major || n.Minor != info.Minor {
				t.Errorf("List dev %d:%d, Info dev %d:%d", n.Major, n.Minor, info.Major, info.Minor)
			}
		}
	}
	if !found {
		t.Fatalf("List = %+v lacks %s", names, name)
	}
	// A table reload: suspend, load, resume.
	if err := dm.Suspend(ctx, name); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	if info, _ = dm.Info(ctx, name); !info.Suspended {
		t.Fatalf("Info after Suspend: not suspended")
	}
	if err := dm.Load(ctx, name, []dmtarget.Target{{Start: 0, Length: 4096, Type: "error"}}); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if info, err = dm.Resume(ctx, name); err != nil {
		t.Fatalf("Resume after reload: %v", err)
	}
	_, live, _ = dm.Table(ctx, name)
	if len(live) != 1 || live[0].Length != 4096 || live[0].Type != "error" {
		t.Fatalf("Table after reload = %+v", live)
	}
	// The reload the leg watcher does: load while live (the live table
	// stays until the resume), then a noflush suspend that skips the file
	// system freeze, then resume.
	if err := dm.Load(ctx, name, []dmtarget.Target{{Start: 0, Length: 4096, Type: "zero"}}); err != nil {
		t.Fatalf("load while live: %v", err)
	}
	if info, _ = dm.Info(ctx, name); !info.ActivePresent || !info.InactivePresent || info.Suspended {
		t.Fatalf("Info after a live load = %+v; want live and inactive tables, not suspended", info)
	}
	if _, live, _ = dm.Table(ctx, name); len(live) != 1 || live[0].Type != "error" {
		t.Fatalf("live table changed by a load: %+v", live)
	}
	if err := dm.SuspendWith(ctx, name, dmtarget.SuspendOptions{NoFlush: true, NoLockFS: true}); err != nil {
		t.Fatalf("SuspendWith(noflush, nolockfs): %v", err)
	}
	if info, _ = dm.Info(ctx, name); !info.Suspended {
		t.Fatalf("Info after SuspendWith: not suspended")
	}
	if info, err = dm.Resume(ctx, name); err != nil || info.Suspended {
		t.Fatalf("Resume after SuspendWith: %+v, %v", info, err)
	}
	if _, live, _ = dm.Table(ctx, name); len(live) != 1 || live[0].Type != "zero" {
		t.Fatalf("Table after the live reload = %+v, want zero", live)
	}
	// Wait returns at once when the event number already moved on, with
	// the status; it blocks while it has not (a table swap is no target
	// event) until ctx ends. Target events (a mirror leg failing) are
	// tested on the real kernel.
	ev = info.EventNr
	winfo, wst, err := dm.Wait(ctx, name, ev+1)
	if err != nil || winfo.EventNr != ev || len(wst) != 1 {
		t.Fatalf("Wait(%d) with event %d: %+v %+v, %v; want an immediate return", ev+1, ev, winfo, wst, err)
	}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, err := dm.Wait(tctx, name, ev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait(%d) without an event: %v, want the deadline", ev, err)
	}
	if err := dm.Remove(ctx, name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := dm.Info(ctx, name); !errors.Is(err, dmtarget.ErrNotFound) {
		t.Fatalf("Info after Remove: %v, want ErrNotFound", err)
	}
	if err := dm.Remove(ctx, name); !errors.Is(err, dmtarget.ErrNotFound) || !strings.Contains(err.Error(), name) {
		t.Fatalf("second Remove: %v, want ErrNotFound naming %s", err, name)
	}
}
