// Command dmsync is the dmsync admin CLI. It talks to dmsyncd over the
// admin socket (/run/dmsync/dmsync.sock) and must run as root.
//
// Exit codes: 0 success, 1 failure, 2 bad usage or invalid request,
// 3 dmsyncd not running, 4 no such volume, 5 in use or already exists,
// 130 interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/admin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "dmsync: %v\n", err)
	}
	os.Exit(exitCode(err))
}

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitNoDaemon    = 3
	exitNoVolume    = 4
	exitBusy        = 5
	exitInterrupted = 130
)

// exitCode maps an error to the documented exit code: the one place.
func exitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.Is(err, errUsage), errors.Is(err, dmtarget.ErrInvalid):
		return exitUsage
	case errors.Is(err, dmtarget.ErrDaemonNotRunning):
		return exitNoDaemon
	case errors.Is(err, dmtarget.ErrNoVolume):
		return exitNoVolume
	case errors.Is(err, dmtarget.ErrBusy), errors.Is(err, dmtarget.ErrExists):
		return exitBusy
	}
	return exitFailure
}

// errUsage marks a command line the CLI cannot parse.
var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
}

// globalOptions are the flags before the command.
type globalOptions struct {
	Socket string
}

// AddFlags binds the options to fs.
func (o *globalOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Socket, "socket", admin.DefaultSocket, "dmsyncd admin socket")
}

const mainUsage = `usage: dmsync [--socket PATH] COMMAND ...

commands:
  volume create NAME --data DEV [--mirror DEV] [--region-size 4M]
                [--crypt luks2|plain --key-file FILE] [--print]
  volume remove NAME
  volume list
  volume status NAME

  init [--state-dir DIR]              make this node's key and certificate; print its id
  id [--state-dir DIR]                print this node's id
  peer add ID --addr HOST:PORT        pin a peer by its id
  peer list
  replicate VOLUME --to PEER [--wait [--timeout D]]
                                      replicate a volume to a pinned peer (kept across restarts)
  receive LOG-UUID --from PEER --image PATH [--size N]
                                      let a peer send a volume into a device or file here
  wait VOLUME [--timeout D]           wait until nothing of VOLUME is pending
  status                              what this node sends and receives
  verify VOLUME                       compare the Merkle roots of VOLUME and its replica
`

// run is the CLI: it parses args and runs one command.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globalOptions
	fs := flag.NewFlagSet("dmsync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, mainUsage) }
	g.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return usageErr("no command given")
	}
	switch rest[0] {
	case "volume":
		return runVolume(ctx, &g, rest[1:], stdout, stderr)
	case "init":
		return runInit(ctx, rest[1:], stdout, stderr)
	case "id":
		return runID(ctx, rest[1:], stdout, stderr)
	case "peer":
		return runPeer(ctx, &g, rest[1:], stdout, stderr)
	case "replicate":
		return runReplicate(ctx, &g, rest[1:], stdout, stderr)
	case "receive":
		return runReceive(ctx, &g, rest[1:], stdout, stderr)
	case "wait":
		return runWait(ctx, &g, rest[1:], stdout, stderr)
	case "status":
		return runStatus(ctx, &g, rest[1:], stdout, stderr)
	case "verify":
		return runVerify(ctx, &g, rest[1:], stdout, stderr)
	case "help":
		fmt.Fprint(stdout, mainUsage)
		return nil
	}
	fs.Usage()
	return usageErr("unknown command %q", rest[0])
}
