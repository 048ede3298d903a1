package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
)

// TestFreezeRecordSurvivesCrash: a log server that dies holding a freeze
// (no Thaw, no auto-thaw, no release: kill -9) leaves its devices
// suspended; the next log server resumes them at its start, from the
// durable record, and removes the record. A freeze that was thawed leaves
// no record.
func TestFreezeRecordSurvivesCrash(t *testing.T) {
	f := dmtargettest.New()
	fakeStack(t, f, [][2]string{{"fz-crypt", "fz-mirror"}, {"fz-top", "fz-crypt"}})
	dir := t.TempDir()
	ctx := context.Background()

	fz, _ := testFreezer(t, f, f)
	fz.dir = dir
	fr, err := fz.Freeze(ctx, freezeUUID, time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	if held, _, err := fz.Thaw(ctx, freezeUUID, fr.Token); err != nil || !held {
		t.Fatalf("thaw: %v %v", held, err)
	}
	waitResumed(t, f, "fz-top")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a thawed freeze left %d records", len(ents))
	}

	// The "crash": a freezer that froze and is never heard of again (its
	// auto-thaw is an hour away; the test never closes it).
	dead, _ := testFreezer(t, f, f)
	dead.dir = dir
	if _, err := dead.Freeze(ctx, freezeUUID, 10*time.Second, false); err != nil {
		t.Fatal(err)
	}
	dead.mu.Lock()
	for _, fv := range dead.vols {
		fv.timer.Stop() // kill -9: no timer fires
	}
	dead.mu.Unlock()
	if !suspended(t, f, "fz-top") || !suspended(t, f, "fz-crypt") {
		t.Fatal("the freeze did not suspend the stack")
	}
	next, _ := testFreezer(t, f, f)
	next.dir = dir
	next.resumeLeftovers()
	if suspended(t, f, "fz-top") || suspended(t, f, "fz-crypt") {
		t.Fatal("the next log server left the dead one's devices suspended: every write to the volume would wait")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d records left after the leftovers were resumed", len(ents))
	}
}
