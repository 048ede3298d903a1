// Command dmsyncd is the dmsync daemon: it serves the device-mapper
// userspace dirty log for dmsync's mirrors and keeps the state in Pebble
// under --state-dir. Run one per machine, as root, in the initial network
// namespace; a second instance refuses to start and names the holder.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err))
}

func exitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	default:
		fmt.Fprintln(os.Stderr, "dmsyncd:", err)
		return exitError
	}
}
