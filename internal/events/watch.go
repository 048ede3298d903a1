package events

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/dmsync/dmsync/internal/opstate"
)

// Emitter is what Watch emits into (a *Hub).
type Emitter interface {
	Emit(kind Kind, volume, message string) Event
}

// Watch asks src for a snapshot every interval until ctx is done and emits
// the events that Diff finds between successive ones, except those of the
// kinds in skip (another source emits them, such as dmtarget's leg watcher
// for leg events).
func Watch(ctx context.Context, src opstate.Source, hub Emitter, interval time.Duration, skip ...Kind) {
	var prev *opstate.Snapshot
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cur := src.Snapshot(ctx)
		for _, e := range Diff(prev, &cur) {
			if !slices.Contains(skip, e.Kind) {
				hub.Emit(e.Kind, e.Volume, e.Message)
			}
		}
		prev = &cur
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Diff returns the events between two snapshots; prev is nil for the first
// one. A first snapshot reports failures already there (a failed leg, a
// failed store) but no peer changes: senders are still connecting. A
// volume or peer that appears later starts as down and not consistent.
func Diff(prev, cur *opstate.Snapshot) []Event {
	var out []Event
	add := func(k Kind, vol, format string, args ...any) {
		out = append(out, Event{Kind: k, Volume: vol, Message: fmt.Sprintf(format, args...)})
	}
	if cur.Log != nil && cur.Log.StoreError != "" && (prev == nil || prev.Log == nil || prev.Log.StoreError == "") {
		add(StoreFailed, "", "the dirty log's state store failed: %s (the log server stopped; restart dmsyncd once the disk is fixed)", cur.Log.StoreError)
	}
	for i := range cur.Volumes {
		v := &cur.Volumes[i]
		var pv *opstate.Volume
		if prev != nil {
			pv, _ = prev.Volume(v.Name)
		}
		for _, l := range v.Legs {
			var pl *opstate.Leg
			if pv != nil {
				for j := range pv.Legs {
					if pv.Legs[j].Index == l.Index {
						pl = &pv.Legs[j]
					}
				}
			}
			switch {
			case !l.OK && (pl == nil || pl.OK):
				add(LegFailed, v.Name, "leg %d (%s) of %s: %s", l.Index, l.Device, v.Name, l.Health)
			case l.OK && pl != nil && !pl.OK:
				add(LegRepaired, v.Name, "leg %d (%s) of %s is healthy again", l.Index, l.Device, v.Name)
			}
		}
		if v.Peer == "" || prev == nil {
			continue
		}
		if pv == nil || pv.Peer != v.Peer {
			// A volume (or peer) new since the last snapshot: it starts
			// down and not consistent.
			pv = &opstate.Volume{Name: v.Name, Peer: v.Peer}
		}
		switch {
		case v.PeerUp && !pv.PeerUp:
			add(PeerUp, v.Name, "%s: peer %s (%s) is up", v.Name, short(v.Peer), v.PeerAddr)
		case !v.PeerUp && pv.PeerUp:
			add(PeerDown, v.Name, "%s: peer %s (%s) is down: %s", v.Name, short(v.Peer), v.PeerAddr, v.State)
		}
		switch {
		case v.PointSeq > pv.PointSeq:
			add(ConsistentPoint, v.Name, "%s: peer %s holds the volume as of %s (point #%d; writes paused %s)",
				v.Name, short(v.Peer), v.PointTakenAt.UTC().Format(time.RFC3339Nano), v.PointSeq, v.PointPause.Round(time.Microsecond))
		case v.PointSeq == 0 && v.Synced && !pv.Synced:
			// No points (nothing to freeze): caught up is all there is.
			add(ConsistentPoint, v.Name, "%s: peer %s holds the volume as of %s", v.Name, short(v.Peer), cur.Time.Format(time.RFC3339))
		}
	}
	return out
}

// short abbreviates a node id for messages.
func short(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}
