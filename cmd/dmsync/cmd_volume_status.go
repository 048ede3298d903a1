package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/dmsync/dmsync/dmtarget"
)

// volumeStatusOptions are the flags of `dmsync volume status` (none yet).
type volumeStatusOptions struct{}

// AddFlags binds the options to fs.
func (o *volumeStatusOptions) AddFlags(fs *flag.FlagSet) {}

var legHealth = map[string]string{
	"A": "alive", "D": "write failed", "S": "sync failed", "R": "read failed", "U": "failed", "F": "flush failed",
}

func runVolumeStatus(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	var o volumeStatusOptions
	fs := flag.NewFlagSet("volume status", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	name, err := oneName("status", pos)
	if err != nil {
		return err
	}
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.VolumeStatus(ctx, name)
	if err != nil {
		return err
	}
	v := s.GetVolume()
	mode := "two-disk"
	if v.GetOneDisk() {
		mode = "one-disk (leg 1 is a sink: writes dropped, reads fail)"
	}
	pct := 100.0
	if s.GetRegions() > 0 {
		pct = 100 * float64(s.GetInSync()) / float64(s.GetRegions())
	}
	var legs []string
	healthy := true
	for _, l := range s.GetLegs() {
		legs = append(legs, fmt.Sprintf("%s %s (%s)", l.GetDev(), l.GetHealth(), legHealth[l.GetHealth()]))
		healthy = healthy && l.GetHealth() == "A"
	}
	state := "healthy"
	if !healthy {
		state = "DEGRADED: a leg failed"
	}
	if lh := s.GetLogHealth(); lh != "" && lh != "A" {
		state = "DEGRADED: log " + lh
	}
	w := func(k, format string, a ...any) {
		fmt.Fprintf(stdout, "%-12s "+format+"\n", append([]any{k + ":"}, a...)...)
	}
	w("volume", "%s (/dev/mapper/%s)", v.GetName(), v.GetName())
	w("state", "%s", state)
	w("mirror", "%s, %s", v.GetMirror(), mode)
	if v.GetCrypt() != "" {
		w("crypt", "%s", v.GetCrypt())
	}
	w("log", "%s %s", v.GetLogType(), v.GetLogUuid())
	w("size", "%s, region %s (%d regions)", dmtarget.FormatSize(v.GetSectors()*512), dmtarget.FormatSize(v.GetRegionSectors()*512), s.GetRegions())
	w("legs sync", "%d/%d regions in sync (%.1f%%), %d pending", s.GetInSync(), s.GetRegions(), pct, s.GetRegions()-s.GetInSync())
	w("legs", "%s", strings.Join(legs, ", "))
	if s.ReplicationPending != nil {
		w("replication", "%d regions not yet replicated to the peer", s.GetReplicationPending())
	}
	if s.GetLogHealth() != "" {
		w("log health", "%s", s.GetLogHealth())
	}
	w("open", "%d", s.GetOpenCount())
	if s.GetSuspended() {
		w("suspended", "yes")
	}
	return nil
}
