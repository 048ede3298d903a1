package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/internal/adminpb"
)

func newPeerCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peer",
		Short: "Pin, list and remove peers",
		Long: `A peer is another dmsync node, pinned by its node id (what ` + "`dmsync id`" + ` prints
there): only a node whose TLS key has that id is accepted.`,
		Example: `  dmsync peer add 6kzp3r… --addr b.example:7420
  dmsync peer list`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newPeerAddCommand(g), newPeerListCommand(g), newPeerRemoveCommand(g))
	return cmd
}

// peerAddOptions are the flags of `dmsync peer add`.
type peerAddOptions struct {
	Addr string
}

// AddFlags binds the options to fs.
func (o *peerAddOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Addr, "addr", "", "HOST:PORT the peer's dmsyncd listens on (its --listen)")
}

func newPeerAddCommand(g *globalOptions) *cobra.Command {
	var o peerAddOptions
	cmd := &cobra.Command{
		Use:   "add ID --addr HOST:PORT",
		Short: "Pin a peer by its node id, with the address it listens on",
		Long: `Pin a peer by its node id (what ` + "`dmsync id`" + ` prints on the peer), with the
address its dmsyncd listens on. Adding a pinned peer again changes its address.`,
		Example: "  dmsync peer add 6kzp3rl2c4m7…  --addr b.example:7420",
		Args:    args("ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runPeerAdd(cmd.Context(), o, g, a[0], cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runPeerAdd(ctx context.Context, o peerAddOptions, g *globalOptions, id string, stdout io.Writer) error {
	if o.Addr == "" {
		return usageErr("peer add %s: --addr HOST:PORT is required (the peer's dmsyncd --listen address)", id)
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Replication().PeerAdd(ctx, &adminpb.PeerAddRequest{Peer: &adminpb.Peer{Id: id, Addr: o.Addr}}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "peer %s pinned at %s\n", id, o.Addr)
	return nil
}

func newPeerListCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the pinned peers",
		Example: "  dmsync peer list",
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPeerList(cmd.Context(), g, cmd.OutOrStdout())
		},
	}
}

func runPeerList(ctx context.Context, g *globalOptions, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().PeerList(ctx, &adminpb.PeerListRequest{})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS")
	for _, p := range r.GetPeers() {
		fmt.Fprintf(tw, "%s\t%s\n", p.GetId(), p.GetAddr())
	}
	return tw.Flush()
}
