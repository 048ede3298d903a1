package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// volumeStatusOptions are the flags of `dmsync volume status`.
type volumeStatusOptions struct {
	JSON bool
}

// AddFlags binds the options to fs.
func (o *volumeStatusOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.JSON, "json", false, "print the status as JSON (schema: doc/status-schema.md)")
}

func newVolumeStatusCommand(g *globalOptions) *cobra.Command {
	var o volumeStatusOptions
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a volume's mirror, legs and replication; exit 1 if something is wrong",
		Example: `  dmsync volume status data
  dmsync volume status data --json | jq .volume.state`,
		Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runVolumeStatus(cmd.Context(), o, g, a[0], cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runVolumeStatus(ctx context.Context, o volumeStatusOptions, g *globalOptions, name string, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.Volumes().VolumeStatus(ctx, &adminpb.VolumeStatusRequest{Name: name})
	if err != nil {
		return err
	}
	d := &volumeStatusDoc{Version: statusVersion, Time: now().UTC(), Volume: volumeToJSON(s), Problems: []problemJSON{}}
	if p, bad := volumeProblem(d.Volume); bad {
		d.Problems = append(d.Problems, p)
	}
	// The volume is shown even when replication is off (no node key, a
	// bad config.json): that is one more problem, not a failed command.
	rs, err := c.Replication().Status(ctx, &adminpb.StatusRequest{})
	if err != nil && !errors.Is(err, admin.ErrUnsupported) { // unsupported: a daemon without replication
		d.Problems = append(d.Problems, problemJSON{Kind: "replication", Name: name, State: "unavailable",
			Message: "replication status: " + err.Error()})
	}
	for _, snd := range rs.GetSends() {
		if snd.GetLogUuid() != "" && snd.GetLogUuid() == d.Volume.LogUUID || snd.GetVolume() == name {
			j := sendToJSON(snd, now())
			d.Send = &j
			if p, bad := sendProblem(j); bad {
				d.Problems = append(d.Problems, p)
			}
		}
	}
	d.OK = len(d.Problems) == 0
	if o.JSON {
		if err := writeJSON(stdout, d); err != nil {
			return err
		}
		return problemsErr(d.Problems)
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
		legs = append(legs, fmt.Sprintf("%s %s (%s)", l.GetDev(), l.GetHealth(), legHealthNames[l.GetHealth()]))
		healthy = healthy && l.GetHealth() == "A"
	}
	state := d.Volume.State
	if !healthy {
		state += " (DEGRADED: a leg failed)"
	}
	if lh := s.GetLogHealth(); lh != "" && lh != "A" {
		state += " (DEGRADED: log " + lh + ")"
	}
	if f := s.GetFailure(); f != nil {
		state = f.GetSummary()
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
	if s.GetFailure().GetState() == "data-failed" {
		w("size", "%s, region %s", dmtarget.FormatSize(v.GetSectors()*512), dmtarget.FormatSize(v.GetRegionSectors()*512))
	} else {
		w("size", "%s, region %s (%d regions)", dmtarget.FormatSize(v.GetSectors()*512), dmtarget.FormatSize(v.GetRegionSectors()*512), s.GetRegions())
	}
	if s.GetFailure().GetState() != "data-failed" {
		w("legs sync", "%d/%d regions in sync (%.1f%%), %d pending", s.GetInSync(), s.GetRegions(), pct, s.GetRegions()-s.GetInSync())
	}
	if len(legs) > 0 {
		w("legs", "%s", strings.Join(legs, ", "))
	}
	if f := s.GetFailure(); f != nil {
		w("failed leg", "%s (leg %d, %s) at %s", f.GetFailedDev(), f.GetFailedLeg(), legHealthNames[f.GetHealth()], f.GetAt())
		if f.GetNote() != "" {
			w("last action", "%s", f.GetNote())
		}
	}
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
	if d.Send != nil {
		w("send", "%s to %s: %s pending, %s", d.Send.State, d.Send.Peer, dmtarget.FormatSize(d.Send.PendingBytes), d.Send.Detail)
	}
	return problemsErr(d.Problems)
}
