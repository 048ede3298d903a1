package dmtarget

import (
	"slices"
	"testing"
)

// FuzzMirrorTargetRoundTrip: the table a degrade or repair loads keeps the
// log uuid, integrated_flush, region size and the other log arguments of
// the table it replaces, names the new legs, always has handle_errors, and
// carries exactly the sync word asked for.
func FuzzMirrorTargetRoundTrip(f *testing.F) {
	f.Add("userspace 4 U integrated_flush core 8192 2 254:16 0 254:32 0 1 handle_errors", "sync")
	f.Add("userspace 5 U integrated_flush core 2048 nosync 2 253:0 0 253:3 0 1 handle_errors", "")
	f.Add("userspace 3 U core 1024 2 /dev/vdb 0 /dev/vdc 8 0", "sync")
	f.Fuzz(func(t *testing.T, params, sync string) {
		if sync != "" && sync != "sync" {
			sync = "sync"
		}
		mt, err := ParseMirrorTable(params)
		if err != nil || mt.LogType != LogUserspace || len(mt.Legs) != 2 {
			return
		}
		legs := []MirrorLeg{mt.Legs[1], {Dev: "253:9"}}
		nt := mirrorTarget(Target{Start: 0, Length: 2048, Type: "mirror", Params: params}, mt, legs, sync)
		got, err := ParseMirrorTable(nt.Params)
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", params, nt.Params, err)
		}
		if got.UUID != mt.UUID || got.IntegratedFlush != mt.IntegratedFlush || got.InnerLogType != mt.InnerLogType || got.RegionSectors != mt.RegionSectors {
			t.Fatalf("%q -> %q: log %+v, want %+v", params, nt.Params, got, mt)
		}
		if len(got.Legs) != 2 || got.Legs[0] != legs[0] || got.Legs[1] != legs[1] {
			t.Fatalf("%q -> %q: legs %+v, want %+v", params, nt.Params, got.Legs, legs)
		}
		if !slices.Contains(got.Features, "handle_errors") {
			t.Fatalf("%q -> %q: no handle_errors", params, nt.Params)
		}
		n := 0
		for _, a := range got.InnerLogArgs {
			if a == "sync" || a == "nosync" {
				n++
			}
		}
		if want := map[bool]int{true: 1, false: 0}[sync != ""]; n != want || (sync != "" && !slices.Contains(got.InnerLogArgs, "sync")) {
			t.Fatalf("%q -> %q: inner args %v, want sync word %q", params, nt.Params, got.InnerLogArgs, sync)
		}
	})
}

// FuzzDecideLegAction: a degrade drops a failed leg and keeps one that
// still takes writes; the data is failed only when no leg takes writes
// (or the survivor of a degraded volume fails); a healthy mirror is left
// alone.
func FuzzDecideLegAction(f *testing.F) {
	f.Add(false, byte('A'), byte('D'), uint8(0), uint16(10), uint16(10))
	f.Add(true, byte('D'), byte('A'), uint8(1), uint16(3), uint16(10))
	f.Fuzz(func(t *testing.T, oneDisk bool, h0, h1 byte, state uint8, inSync, regions uint16) {
		const hs = "ADSRUF"
		h0, h1 = hs[int(h0)%len(hs)], hs[int(h1)%len(hs)]
		if inSync > regions {
			inSync = regions
		}
		ms := MirrorStatus{Legs: []MirrorLeg{{Health: h0}, {Health: h1}}, InSync: uint64(inSync), Regions: uint64(regions)}
		var rec *LegFailure
		if s := []FailureState{"", StateDegraded, StateDataFailed, StateResyncing, StateReadErrors}[int(state)%5]; s != "" {
			rec = &LegFailure{State: s, OneDisk: oneDisk}
		}
		d := DecideLegAction(oneDisk, ms, rec)
		l := []byte{h0, h1}
		switch d.Action {
		case ActNone:
			if rec == nil && !oneDisk && (h0 != LegAlive || h1 != LegAlive) {
				t.Fatalf("two disks %c%c with no record: no action", h0, h1)
			}
		case ActDegrade:
			if oneDisk || l[d.Leg] == LegAlive || writeFailed(l[1-d.Leg]) {
				t.Fatalf("degrade leg %d of %c%c (one disk %v, rec %+v)", d.Leg, h0, h1, oneDisk, rec)
			}
		case ActFailData:
			if !writeFailed(h0) {
				t.Fatalf("fail data with leg 0 %c (legs %c%c, rec %+v)", h0, h0, h1, rec)
			}
		case ActReadErrors:
			if writeFailed(h0) || writeFailed(h1) && !oneDisk {
				t.Fatalf("read errors only for %c%c (one disk %v)", h0, h1, oneDisk)
			}
		case ActRepairDone:
			if rec == nil || rec.State != StateResyncing || inSync != regions || h0 != LegAlive {
				t.Fatalf("repair done at %d/%d legs %c%c rec %+v", inSync, regions, h0, h1, rec)
			}
		}
		if rec != nil && rec.State == StateDataFailed && d.Action != ActNone {
			t.Fatalf("action %v on a failed data disk", d.Action)
		}
	})
}
