package dmtargettest

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/dmsync/dmsync/dmtarget"
)

func TestFakeSuite(t *testing.T) { RunSuite(t, New(), "fake-") }

func TestFakeFailOn(t *testing.T) {
	f := New()
	boom := errors.New("boom")
	f.FailOn("create v", boom)
	if _, err := f.Create(context.Background(), "v", ""); !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	if len(f.Devices()) != 0 {
		t.Fatalf("failed create left %v", f.Devices())
	}
	if _, err := f.Create(context.Background(), "v", ""); err != nil {
		t.Fatalf("failure was not one-shot: %v", err)
	}
}

func TestListUserspaceLogVolumes(t *testing.T) {
	ctx := context.Background()
	f := New()
	mk := func(name, table string) {
		t.Helper()
		ts, err := dmtarget.ParseTable(table)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Create(ctx, name, ""); err != nil {
			t.Fatal(err)
		}
		if err := f.Load(ctx, name, ts); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Resume(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	mk("plain", "0 2048 mirror userspace 4 UUID-A integrated_flush core 1024 2 /dev/vdb 0 /dev/vdc 0 1 handle_errors")
	mk("corelog", "0 2048 mirror core 2 1024 nosync 2 /dev/vdb 0 /dev/vdc 0 1 handle_errors")
	mk("lin", "0 2048 zero")
	mk("second", "0 8 error\n8 2048 mirror userspace 3 UUID-B core 1024 2 253:1 0 253:2 0")
	vs, err := dmtarget.ListUserspaceLogVolumes(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 {
		t.Fatalf("got %+v, want plain and second", vs)
	}
	if vs[0].Name != "plain" || vs[0].LogUUID() != "UUID-A" || vs[0].Table.Legs[1].Dev != "/dev/vdc" || !vs[0].Table.IntegratedFlush {
		t.Errorf("plain: %+v", vs[0])
	}
	if vs[1].Name != "second" || vs[1].LogUUID() != "UUID-B" || vs[1].Start != 8 || vs[1].Table.RegionSectors != 1024 {
		t.Errorf("second: %+v", vs[1])
	}
}

func TestFakeWaitWakesOnEvent(t *testing.T) {
	ctx := context.Background()
	f := New()
	f.Create(ctx, "v", "")
	done := make(chan uint32)
	go func() {
		info, _, err := f.Wait(ctx, "v", 0)
		if err != nil {
			t.Error(err)
		}
		done <- info.EventNr
	}()
	for len(f.Calls()) < 2 { // the waiter is registered
		runtime.Gosched()
	}
	f.Update("v", true, func(*Device) {})
	if ev := <-done; ev != 1 {
		t.Fatalf("woke with event %d, want 1", ev)
	}
}
