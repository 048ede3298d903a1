package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/dmsync/dmsync/internal/replpb"
)

// peerAddOptions are the flags of `dmsync peer add`.
type peerAddOptions struct {
	Addr string
}

// AddFlags binds the options to fs.
func (o *peerAddOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Addr, "addr", "", "HOST:PORT the peer's dmsyncd listens on (its --listen)")
}

// runPeer dispatches `dmsync peer VERB`.
func runPeer(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("peer: no verb given (add, list)")
	}
	switch args[0] {
	case "add":
		var o peerAddOptions
		fs := flag.NewFlagSet("peer add", flag.ContinueOnError)
		o.AddFlags(fs)
		pos, err := parseFlags(fs, args[1:], stderr)
		if err != nil {
			return err
		}
		if len(pos) != 1 || o.Addr == "" {
			return usageErr("usage: dmsync peer add ID --addr HOST:PORT (ID is what `dmsync id` prints on the peer)")
		}
		c, err := dial(ctx, g)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Replication().PeerAdd(ctx, &replpb.PeerAddRequest{Peer: &replpb.Peer{Id: pos[0], Addr: o.Addr}})
		if err != nil {
			return c.Err(err)
		}
		fmt.Fprintf(stdout, "peer %s pinned at %s\n", pos[0], o.Addr)
		return nil
	case "list":
		c, err := dial(ctx, g)
		if err != nil {
			return err
		}
		defer c.Close()
		r, err := c.Replication().PeerList(ctx, &replpb.PeerListRequest{})
		if err != nil {
			return c.Err(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tADDRESS")
		for _, p := range r.GetPeers() {
			fmt.Fprintf(tw, "%s\t%s\n", p.GetId(), p.GetAddr())
		}
		return tw.Flush()
	}
	return usageErr("peer: unknown verb %q (add, list)", args[0])
}
