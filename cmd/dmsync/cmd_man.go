package main

import (
	"fmt"
	"github.com/dmsync/dmsync/internal/version"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func newManCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write a man page for every command into DIR (for packaging)",
		Hidden: true,
		Example: `  dmsync man debian/tmp/usr/share/man/man8
  dmsync completion bash > /usr/share/bash-completion/completions/dmsync`,
		Args: args("DIR"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := os.MkdirAll(a[0], 0o755); err != nil {
				return err
			}
			h := &doc.GenManHeader{Title: "DMSYNC", Section: "8", Source: "dmsync " + version.Version, Manual: "dmsync manual"}
			if err := doc.GenManTree(cmd.Root(), h, a[0]); err != nil {
				return fmt.Errorf("man pages into %s: %w", a[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "man pages written to %s\n", a[0])
			return nil
		},
	}
}
