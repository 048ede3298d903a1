package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

func newSnapshotCommand(g *globalOptions) *cobra.Command {
	var o waitOptions
	cmd := &cobra.Command{
		Use:   "snapshot VOLUME [--timeout D]",
		Short: "Make a consistency point of a replicated volume now",
		Long: `Make a consistency point of a replicated volume now, whatever its point
interval: dmsyncd sends what is pending, freezes the volume's writes for a
moment (the device above its mirror is suspended, as a power cut would leave
it), reads what changed meanwhile, lets writes go on, and the peer applies
the point whole. Returns once the peer holds it: the replica is then exactly
the volume as it was at the time printed. Exits 1 if --timeout passes first,
or if the volume cannot have points (a mirror with no device above it).`,
		Example: "  dmsync snapshot data\n  dmsync snapshot data --timeout 10m",
		Args:    args("VOLUME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runSnapshot(cmd.Context(), g, a[0], o, cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runSnapshot(ctx context.Context, g *globalOptions, volume string, o waitOptions, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().Snapshot(ctx, &adminpb.SnapshotRequest{Volume: volume, TimeoutNano: int64(o.Timeout)})
	if err != nil {
		return err
	}
	p := r.GetPoint()
	fmt.Fprintf(stdout, "%s: consistency point #%d of %s held by the peer (I/O paused %s, %s read while frozen)\n",
		volume, p.GetSeq(), time.Unix(0, p.GetTakenAtUnixNano()).UTC().Format(time.RFC3339Nano),
		time.Duration(p.GetLastPauseNano()).Round(time.Microsecond), dmtarget.FormatSize(p.GetCapturedBytes()))
	return nil
}
