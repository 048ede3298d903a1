package main

import "github.com/spf13/cobra"

func newVolumeCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Create, remove, list and inspect volumes",
		Long: `A volume is a dm mirror whose userspace dirty log dmsyncd serves, with an
optional second leg (else a sink leg: one-disk mode) and dm-crypt on top.`,
		Example: `  dmsync volume create data --data /dev/sdb --crypt luks2 --key-file /etc/dmsync/data.key
  dmsync volume list`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newVolumeCreateCommand(g), newVolumeRemoveCommand(g), newVolumeListCommand(g), newVolumeStatusCommand(g), newVolumeRepairCommand(g))
	return cmd
}
