package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/internal/adminpb"
)

// volumeRepairOptions are the flags of `dmsync volume repair`.
type volumeRepairOptions struct {
	Mirror string
	Data   string
}

// AddFlags binds the options to fs.
func (o *volumeRepairOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Mirror, "mirror", "", "new second leg: replaces the failed leg of a two-disk volume (the kernel copies every region onto it)")
	fs.StringVar(&o.Data, "data", "", "new data disk, holding the peer's replica restored onto it: replaces a failed data disk")
}

func newVolumeRepairCommand(g *globalOptions) *cobra.Command {
	var o volumeRepairOptions
	cmd := &cobra.Command{
		Use:   "repair NAME (--mirror DEV | --data DEV)",
		Short: "Give a volume whose leg failed a new device",
		Long: `Give a volume whose leg failed a new device. Two disks: --mirror DEV
replaces the failed leg and the kernel copies every region onto it. One
disk (or both legs gone): restore the peer's replica onto a new disk, then
--data DEV puts it in as the data disk and every region is sent again.`,
		Example: `  dmsync volume status data        # DEGRADED: leg /dev/sdc failed
  dmsync volume repair data --mirror /dev/sdd`,
		Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runVolumeRepair(cmd.Context(), g, a[0], o, cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// runVolumeRepair gives a volume whose leg failed a new device.
func runVolumeRepair(ctx context.Context, g *globalOptions, name string, o volumeRepairOptions, stdout io.Writer) error {
	if (o.Mirror == "") == (o.Data == "") {
		return usageErr("volume repair %s: give exactly one of --mirror DEV (replace a failed leg) or --data DEV (a data disk restored from the peer's replica)", name)
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Volumes().VolumeRepair(ctx, &adminpb.VolumeRepairRequest{Name: name, Mirror: o.Mirror, Data: o.Data})
	if err != nil {
		return err
	}
	f := r.GetFailure()
	dev := o.Mirror
	if dev == "" {
		dev = o.Data
	}
	fmt.Fprintf(stdout, "repairing volume %s: %s replaces %s\n", name, dev, f.GetFailedDev())
	fmt.Fprintf(stdout, "%s\n", f.GetSummary())
	fmt.Fprintf(stdout, "watch it with: dmsync volume status %s\n", name)
	return nil
}
