package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/internal/identity"
)

// defaultStateDir is dmsyncd's default --state-dir, where the node's
// identity lives.
const defaultStateDir = "/var/lib/dmsync"

// initOptions are the flags of `dmsync init` and `dmsync id`.
type initOptions struct {
	StateDir string
	Rotate   bool
}

// AddFlags binds the options to fs.
func (o *initOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.StateDir, "state-dir", defaultStateDir, "dmsyncd's state directory")
}

func newInitCommand() *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Make this node's key and certificate and print its id",
		Long: `Make this node's ECDSA P-256 key and self-signed certificate in the state
directory and print the node id that peers pin. Works without dmsyncd;
restart dmsyncd afterwards so that it uses the identity.

With --rotate, replace an existing key (the old files are kept as
node.key.retired-OLDID and node.crt.retired-OLDID): the node gets a new id,
and every peer must pin it instead of the old one (see the lines printed).`,
		Example: `  dmsync init
  dmsync init --state-dir /var/lib/dmsync-b
  dmsync init --rotate && systemctl restart dmsyncd`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&o.Rotate, "rotate", false, "replace the existing key with a new one (a new node id)")
	return cmd
}

func runInit(_ context.Context, o initOptions, stdout, stderr io.Writer) error {
	var old *identity.Identity
	if o.Rotate {
		var err error
		if old, err = identity.Load(o.StateDir); err != nil {
			return err
		}
		for _, f := range []string{identity.KeyFile, identity.CertFile} {
			p := filepath.Join(o.StateDir, f)
			if err := os.Rename(p, p+".retired-"+old.ID); err != nil {
				return fmt.Errorf("init --rotate: keep the old %s: %w", f, err)
			}
		}
	}
	id, err := identity.Init(o.StateDir)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id.ID)
	if old == nil {
		fmt.Fprintf(stderr, "node identity created in %s; restart dmsyncd to use it, and give peers this id\n", o.StateDir)
		return nil
	}
	fmt.Fprintf(stderr, `node key rotated in %s: %s replaces %s (kept as %s.retired-%s).
Restart dmsyncd to use it, then on every peer:
  peers that send to this node:  dmsync peer remove %s --force && dmsync peer add %s --addr ADDR
                                 and again: dmsync replicate VOLUME --to %s
  peers this node sends to:      dmsync receive VOLUME --from %s --image SAME-IMAGE --force
`, o.StateDir, id.ID, old.ID, identity.KeyFile, old.ID, old.ID, id.ID, id.ID, id.ID)
	return nil
}

func newIDCommand() *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:     "id",
		Short:   "Print this node's id",
		Long:    "Print this node's id (what peers give `dmsync peer add` and `dmsync receive --from`).",
		Example: "  dmsync id",
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runID(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runID(_ context.Context, o initOptions, stdout io.Writer) error {
	id, err := identity.Load(o.StateDir)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id.ID)
	return nil
}
