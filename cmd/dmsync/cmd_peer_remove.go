package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/internal/adminpb"
)

// peerRemoveOptions are the flags of `dmsync peer remove`.
type peerRemoveOptions struct {
	Force bool
}

// AddFlags binds the options to fs.
func (o *peerRemoveOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Force, "force", false, "also stop the sends to it and remove the receives from it")
}

func newPeerRemoveCommand(g *globalOptions) *cobra.Command {
	var o peerRemoveOptions
	cmd := &cobra.Command{
		Use:     "remove ID [--force]",
		Aliases: []string{"revoke"},
		Short:   "Unpin a peer and revoke its key",
		Long: `Unpin a peer and revoke its key: this node no longer dials it, refuses it in
the TLS handshake, and closes its live connections. A peer that a send or
a receive uses is refused unless --force, which stops those too. Use it
when a peer is retired or its key may have leaked (` + "`dmsync peer revoke`" + ` is
the same command).`,
		Example: `  dmsync peer remove 6kzp3rl2c4m7…
  dmsync peer revoke 6kzp3rl2c4m7… --force`,
		Args: args("ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runPeerRemove(cmd.Context(), o, g, a[0], cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runPeerRemove(ctx context.Context, o peerRemoveOptions, g *globalOptions, id string, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Replication().PeerRemove(ctx, &adminpb.PeerRemoveRequest{Id: id, Force: o.Force})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "peer %s removed and its key revoked", id)
	if s := r.GetStoppedSends(); len(s) > 0 {
		fmt.Fprintf(stdout, "; stopped sending %s", strings.Join(s, ", "))
	}
	if s := r.GetRemovedReceives(); len(s) > 0 {
		fmt.Fprintf(stdout, "; no longer receiving %s", strings.Join(s, ", "))
	}
	fmt.Fprintln(stdout)
	return nil
}
