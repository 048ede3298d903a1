package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/replpb"
)

// receiveOptions are the flags of `dmsync receive`.
type receiveOptions struct {
	From  string
	Image string
	Size  string
}

// AddFlags binds the options to fs.
func (o *receiveOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.From, "from", "", "node id of the peer allowed to send this volume")
	fs.StringVar(&o.Image, "image", "", "absolute path of the replica: a block device or a file")
	fs.StringVar(&o.Size, "size", "", "volume size (e.g. 512M), needed to create a missing image file")
}

// runReceive lets a peer send a volume into an image on this node.
func runReceive(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	var o receiveOptions
	fs := flag.NewFlagSet("receive", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 || o.From == "" || o.Image == "" {
		return usageErr("usage: dmsync receive LOG-UUID --from PEER --image PATH [--size N]")
	}
	var size uint64
	if o.Size != "" {
		if size, err = dmtarget.ParseSize(o.Size); err != nil {
			return usageErr("--size %q: %v", o.Size, err)
		}
	}
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Replication().Receive(ctx, &replpb.ReceiveRequest{Volume: pos[0], From: o.From, Image: o.Image, Size: size})
	if err != nil {
		return c.Err(err)
	}
	fmt.Fprintf(stdout, "receiving %s from %s into %s\n", pos[0], o.From, o.Image)
	return nil
}
