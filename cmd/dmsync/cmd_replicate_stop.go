package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/dmsync/dmsync/internal/adminpb"
)

func newReplicateStopCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "stop VOLUME",
		Short: "Stop replicating a volume and forget the send",
		Long: `Stop replicating a volume to its peer and forget the send (it is not resumed
after a restart). The peer keeps its replica as it was at the last
acknowledged batch; replicating again later starts with a full pass, in
which the peer fetches only the chunks it lacks.`,
		Example: "  dmsync replicate stop data",
		Args:    args("VOLUME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReplicateStop(cmd.Context(), g, a[0], cmd.OutOrStdout())
		},
	}
}

func runReplicateStop(ctx context.Context, g *globalOptions, volume string, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().ReplicateStop(ctx, &adminpb.ReplicateStopRequest{Volume: volume})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stopped replicating %s to %s\n", volume, r.GetPeer())
	return nil
}
