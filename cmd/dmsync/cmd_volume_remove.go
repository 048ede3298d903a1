package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dmsync/dmsync/internal/adminpb"
)

func newVolumeRemoveCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Tear a volume down, top device first",
		Long: `Tear a volume down: dm-crypt, the mirror and the sink leg, top device
first. The volume must not be mounted or open. The disks keep their data.`,
		Example: "  umount /srv/data && dmsync volume remove data",
		Args:    args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runVolumeRemove(cmd.Context(), g, a[0], cmd.OutOrStdout())
		},
	}
}

func runVolumeRemove(ctx context.Context, g *globalOptions, name string, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Volumes().VolumeRemove(ctx, &adminpb.VolumeRemoveRequest{Name: name})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed volume %s (%s)\n", name, strings.Join(r.GetRemoved(), ", "))
	return nil
}
