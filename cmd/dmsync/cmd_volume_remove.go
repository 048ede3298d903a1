package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

// volumeRemoveOptions are the flags of `dmsync volume remove` (none yet).
type volumeRemoveOptions struct{}

// AddFlags binds the options to fs.
func (o *volumeRemoveOptions) AddFlags(fs *flag.FlagSet) {}

func runVolumeRemove(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	var o volumeRemoveOptions
	fs := flag.NewFlagSet("volume remove", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	name, err := oneName("remove", pos)
	if err != nil {
		return err
	}
	c, err := dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.VolumeRemove(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed volume %s (%s)\n", name, strings.Join(r.GetRemoved(), ", "))
	return nil
}
