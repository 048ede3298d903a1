package events

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/opstate"
	"github.com/dmsync/dmsync/logd"
)

func TestDiff(t *testing.T) {
	vol := func(mod func(v *opstate.Volume)) *opstate.Snapshot {
		v := opstate.Volume{Name: "v", Peer: "p1", PeerAddr: "b:7420", PeerUp: true, State: "idle",
			Legs: []opstate.Leg{{Index: 0, Device: "8:16", Health: "alive", OK: true}, {Index: 1, Device: "8:32", Health: "alive", OK: true}}}
		if mod != nil {
			mod(&v)
		}
		return &opstate.Snapshot{Time: time.Unix(100, 0), Volumes: []opstate.Volume{v}, Log: &logd.Stats{}}
	}
	failLeg1 := func(v *opstate.Volume) { v.Legs[1].OK, v.Legs[1].Health = false, "write-failed" }
	for _, c := range []struct {
		name      string
		prev, cur *opstate.Snapshot
		want      []Kind
		msg       string // in the first event's message
	}{
		{"steady", vol(nil), vol(nil), nil, ""},
		{"first snapshot healthy", nil, vol(nil), nil, ""},
		{"first snapshot failed leg", nil, vol(failLeg1), []Kind{LegFailed}, "leg 1 (8:32) of v: write-failed"},
		{"leg fails", vol(nil), vol(failLeg1), []Kind{LegFailed}, "write-failed"},
		{"leg stays failed", vol(failLeg1), vol(failLeg1), nil, ""},
		{"leg repaired", vol(failLeg1), vol(nil), []Kind{LegRepaired}, "healthy again"},
		{"peer down", vol(nil), vol(func(v *opstate.Volume) { v.PeerUp, v.State = false, "retrying: connection refused" }),
			[]Kind{PeerDown}, "connection refused"},
		{"peer up", vol(func(v *opstate.Volume) { v.PeerUp = false }), vol(nil), []Kind{PeerUp}, "is up"},
		{"first snapshot peer down: no event", nil, vol(func(v *opstate.Volume) { v.PeerUp = false }), nil, ""},
		{"consistent point", vol(nil), vol(func(v *opstate.Volume) { v.Synced = true }), []Kind{ConsistentPoint}, "as of 1970"},
		{"still consistent", vol(func(v *opstate.Volume) { v.Synced = true }), vol(func(v *opstate.Volume) { v.Synced = true }), nil, ""},
		{"a new point", vol(func(v *opstate.Volume) { v.PointSeq = 3 }), vol(func(v *opstate.Volume) {
			v.PointSeq, v.PointTakenAt, v.PointPause = 4, time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC), 3*time.Millisecond
		}), []Kind{ConsistentPoint}, "as of 2026-12-02T05:00:00Z (point #4; writes paused 3ms)"},
		{"same point, synced again: no event", vol(func(v *opstate.Volume) { v.PointSeq = 4 }),
			vol(func(v *opstate.Volume) { v.PointSeq, v.Synced = 4, true }), nil, ""},
		{"new peer: up and consistent", vol(nil), vol(func(v *opstate.Volume) { v.Peer, v.Synced = "p2", true }),
			[]Kind{PeerUp, ConsistentPoint}, "p2"},
		{"new volume, peer still down", &opstate.Snapshot{Log: &logd.Stats{}}, vol(func(v *opstate.Volume) { v.PeerUp = false }), nil, ""},
		{"new volume, up", &opstate.Snapshot{Log: &logd.Stats{}}, vol(nil), []Kind{PeerUp}, "is up"},
		{"store fails", vol(nil), func() *opstate.Snapshot { s := vol(nil); s.Log.StoreError = "disk full"; return s }(),
			[]Kind{StoreFailed}, "disk full"},
		{"two at once", vol(nil), vol(func(v *opstate.Volume) { failLeg1(v); v.PeerUp = false }), []Kind{LegFailed, PeerDown}, ""},
	} {
		got := Diff(c.prev, c.cur)
		var kinds []Kind
		for _, e := range got {
			kinds = append(kinds, e.Kind)
		}
		if strings.Join(kindStrings(kinds), ",") != strings.Join(kindStrings(c.want), ",") {
			t.Errorf("%s: events %v, want %v", c.name, kinds, c.want)
			continue
		}
		if c.msg != "" && !strings.Contains(got[0].Message, c.msg) {
			t.Errorf("%s: message %q lacks %q", c.name, got[0].Message, c.msg)
		}
	}
}

func kindStrings(ks []Kind) []string {
	var s []string
	for _, k := range ks {
		s = append(s, string(k))
	}
	return s
}

func TestWatch(t *testing.T) {
	snaps := make(chan opstate.Snapshot, 3)
	snaps <- opstate.Snapshot{Volumes: []opstate.Volume{{Name: "v", Peer: "p", PeerUp: false}}}
	snaps <- opstate.Snapshot{Volumes: []opstate.Volume{{Name: "v", Peer: "p", PeerUp: true}}}
	hub := NewHub(0)
	sub := hub.SubscribeNew()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last opstate.Snapshot
	src := opstate.SourceFunc(func(context.Context) opstate.Snapshot {
		select {
		case s := <-snaps:
			last = s
		default:
		}
		return last
	})
	go Watch(ctx, src, hub, time.Millisecond)
	select {
	case e := <-sub.C:
		if e.Kind != PeerUp || e.Volume != "v" {
			t.Fatalf("event %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no peer-up event")
	}
}
