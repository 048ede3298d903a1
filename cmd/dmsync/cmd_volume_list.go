package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

func newVolumeListCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List dmsync volumes and adopted userspace-log mirrors",
		Example: "  dmsync volume list",
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVolumeList(cmd.Context(), g, cmd.OutOrStdout())
		},
	}
}

func runVolumeList(ctx context.Context, g *globalOptions, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Volumes().VolumeList(ctx, &adminpb.VolumeListRequest{})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMIRROR\tMODE\tCRYPT\tLOG\tLOG UUID\tSIZE\tREGION\tORIGIN")
	for _, v := range r.GetVolumes() {
		origin := "dmsync"
		if !v.GetManaged() {
			origin = "adopted"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.GetName(), v.GetMirror(), mode(v), dash(v.GetCrypt()),
			v.GetLogType(), dash(v.GetLogUuid()), dmtarget.FormatSize(v.GetSectors()*512),
			dmtarget.FormatSize(v.GetRegionSectors()*512), origin)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
