package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

func newResyncCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "resync VOLUME",
		Short: "Make every region of a replicated volume pending again",
		Long: `Make every region of a replicated volume pending again, as for a new peer:
the peer is offered the whole volume and fetches only the chunks it does
not hold. Use it after the replica was changed or replaced behind dmsync's
back, or when verify found differences.`,
		Example: "  dmsync resync data && dmsync wait data",
		Args:    args("VOLUME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runResync(cmd.Context(), g, a[0], cmd.OutOrStdout())
		},
	}
}

func runResync(ctx context.Context, g *globalOptions, volume string, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().Resync(ctx, &adminpb.ResyncRequest{Volume: volume})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d regions (%s) pending again; `dmsync wait %s` follows them\n", volume, r.GetRegions(), dmtarget.FormatSize(r.GetBytes()), volume)
	return nil
}
