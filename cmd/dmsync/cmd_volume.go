package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/dmsync/dmsync/internal/admin"
)

// runVolume dispatches `dmsync volume VERB`.
func runVolume(ctx context.Context, g *globalOptions, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return usageErr("volume: no verb given (create, remove, list, status)")
	}
	switch args[0] {
	case "create":
		return runVolumeCreate(ctx, g, args[1:], stdout, stderr)
	case "remove":
		return runVolumeRemove(ctx, g, args[1:], stdout, stderr)
	case "list":
		return runVolumeList(ctx, g, args[1:], stdout, stderr)
	case "status":
		return runVolumeStatus(ctx, g, args[1:], stdout, stderr)
	}
	return usageErr("volume: unknown verb %q (create, remove, list, status)", args[0])
}

// parseFlags parses a verb's flags, allowing them before or after the
// positional arguments, and returns the positionals.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	fs.SetOutput(stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// dial connects to dmsyncd.
func dial(ctx context.Context, g *globalOptions) (*admin.Client, error) {
	return admin.Dial(ctx, g.Socket)
}

// oneName checks that exactly one positional argument (a name) was given.
func oneName(verb string, pos []string) (string, error) {
	if len(pos) != 1 {
		return "", usageErr("volume %s: want exactly one volume NAME, got %d arguments", verb, len(pos))
	}
	return pos[0], nil
}
