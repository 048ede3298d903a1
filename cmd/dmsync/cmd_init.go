package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/dmsync/dmsync/internal/identity"
)

// defaultStateDir is dmsyncd's default --state-dir, where the node's
// identity lives.
const defaultStateDir = "/var/lib/dmsync"

// initOptions are the flags of `dmsync init` and `dmsync id`.
type initOptions struct {
	StateDir string
}

// AddFlags binds the options to fs.
func (o *initOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.StateDir, "state-dir", defaultStateDir, "dmsyncd's state directory")
}

// runInit makes the node's ECDSA P-256 key and self-signed certificate and
// prints the node id peers pin. It works without a running dmsyncd.
func runInit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var o initOptions
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageErr("init takes no arguments, got %q", pos)
	}
	id, err := identity.Init(o.StateDir)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id.ID)
	fmt.Fprintf(stderr, "node identity created in %s; restart dmsyncd to use it, and give peers this id\n", o.StateDir)
	return nil
}

// runID prints the node id.
func runID(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var o initOptions
	fs := flag.NewFlagSet("id", flag.ContinueOnError)
	o.AddFlags(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageErr("id takes no arguments, got %q", pos)
	}
	id, err := identity.Load(o.StateDir)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id.ID)
	return nil
}
