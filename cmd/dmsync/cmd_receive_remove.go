package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/dmsync/dmsync/internal/adminpb"
)

func newReceiveRemoveCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "remove VOLUME",
		Short: "Stop receiving a volume and forget it (the image keeps its bytes)",
		Long: `Stop receiving a volume and forget it: the sender is refused from then on.
The image keeps its bytes, the replica as of the last acknowledged batch.`,
		Example: "  dmsync receive remove data",
		Args:    args("VOLUME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReceiveRemove(cmd.Context(), g, a[0], cmd.OutOrStdout())
		},
	}
}

func runReceiveRemove(ctx context.Context, g *globalOptions, volume string, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().ReceiveRemove(ctx, &adminpb.ReceiveRemoveRequest{Volume: volume})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "no longer receiving %s from %s; %s keeps its bytes\n", volume, r.GetFrom(), r.GetImage())
	return nil
}
