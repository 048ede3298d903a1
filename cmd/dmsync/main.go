// Command dmsync is the dmsync admin CLI. It talks to dmsyncd over the
// admin socket (/run/dmsync/dmsync.sock) and must run as root.
//
// Each subcommand lives in its own cmd_<verb>.go: a constructor returns
// the cobra command, an options struct binds its flags with AddFlags, and
// run<Verb>(ctx, opts, ...) does the work and returns an error. exitCode
// is the one place that turns errors into exit codes:
//
//	0   ok
//	1   failure (including a status that shows something wrong)
//	2   bad usage or invalid request
//	3   dmsyncd is not running
//	4   no such volume, peer or replication
//	5   busy or already exists
//	6   permission denied (run as root)
//	130 interrupted
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsync: %v\n", err)
	}
	os.Exit(exitCode(err))
}

// Exit codes (the table in the package doc and in README).
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitNoDaemon    = 3
	exitNoVolume    = 4
	exitBusy        = 5
	exitPermission  = 6
	exitInterrupted = 130
)

// exitCode maps an error to the documented exit code: the one place.
// Errors raised in the CLI itself (dmtarget's plan, the identity files)
// are classified into the admin API's kinds first.
func exitCode(err error) int {
	err = admin.Classify(err)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.Is(err, errUsage), errors.Is(err, admin.ErrInvalid):
		return exitUsage
	case errors.Is(err, admin.ErrNotRunning):
		return exitNoDaemon
	case errors.Is(err, admin.ErrNotFound):
		return exitNoVolume
	case errors.Is(err, admin.ErrBusy), errors.Is(err, admin.ErrExists):
		return exitBusy
	case errors.Is(err, admin.ErrPermission):
		return exitPermission
	}
	return exitFailure
}

// errUsage marks a command line the CLI cannot parse.
var errUsage = errors.New("usage")

// usageError is a command-line mistake; its text is the message alone.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return errUsage }

func usageErr(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// globalOptions are the flags every command takes.
type globalOptions struct {
	Socket string
}

// AddFlags binds the options to fs.
func (o *globalOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Socket, "socket", admin.DefaultSocket, "dmsyncd's admin socket")
}

// dial connects to dmsyncd.
func (o *globalOptions) dial(ctx context.Context) (*admin.Client, error) {
	return admin.Dial(ctx, o.Socket)
}

// newRootCommand builds the command tree, writing to stdout and stderr.
func newRootCommand(g *globalOptions, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "dmsync",
		Short: "Replicate a block device to a peer through the kernel's write-intent log",
		Long: `dmsync is the admin CLI of dmsyncd: it builds volumes (a dm mirror whose
userspace dirty log dmsyncd serves, with dm-crypt on top), pins peers and
replicates volumes to them, and reports progress. It talks to dmsyncd over
its root-only unix socket.

Exit codes: 0 ok, 1 failure, 2 bad usage, 3 dmsyncd not running, 4 no such
volume or peer, 5 busy or exists, 6 permission denied, 130 interrupted.`,
		Example: `  dmsync volume create data --data /dev/sdb --crypt luks2 --key-file /etc/dmsync/data.key
  dmsync peer add 6kzp3r… --addr b.example:7420
  dmsync replicate data --to 6kzp3r… --wait
  dmsync status`,
		Version:           version.Version,
		SilenceErrors:     true,
		SilenceUsage:      true,
		Args:              cobra.ArbitraryArgs,
		RunE:              groupRunE,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
	}
	root.SetVersionTemplate(version.String("dmsync") + "\n")
	g.AddFlags(root.PersistentFlags())
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(
		newVolumeCommand(g),
		newInitCommand(), newIDCommand(),
		newPeerCommand(g),
		newReplicateCommand(g), newReceiveCommand(g),
		newWaitCommand(g), newStatusCommand(g), newVerifyCommand(g), newResyncCommand(g), newSnapshotCommand(g),
		newEventsCommand(g),
		newManCommand(),
	)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.InitDefaultCompletionCmd() // after SetOut: it keeps the writer
	root.InitDefaultHelpCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			c.Example = "  dmsync help receive"
		case "completion":
			c.Example = "  dmsync completion bash > /etc/bash_completion.d/dmsync"
			for _, sh := range c.Commands() {
				sh.Example = "  source <(dmsync completion " + sh.Name() + ")"
			}
		}
	}
	return root
}

// groupRunE runs for a command that only groups verbs: a missing or
// unknown verb is a usage error naming the verbs.
func groupRunE(cmd *cobra.Command, args []string) error {
	var verbs []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
			verbs = append(verbs, c.Name())
		}
	}
	if len(args) == 0 {
		return usageErr("%sgive a command (%s); see `%s --help`", prefix(cmd), strings.Join(verbs, ", "), cmd.CommandPath())
	}
	return usageErr("%sunknown command %q (%s); see `%s --help`", prefix(cmd), args[0], strings.Join(verbs, ", "), cmd.CommandPath())
}

// flagError turns pflag's complaint into a usage error with the fix.
func flagError(cmd *cobra.Command, err error) error {
	return usageErr("%s%v; see `%s --help`", prefix(cmd), err, cmd.CommandPath())
}

// prefix is "VERB: " for a message about a subcommand, "" for the root.
func prefix(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return ""
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ") + ": "
}

// args checks the number of positional arguments; names describes them
// for the message, e.g. "VOLUME".
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) == len(names) {
			return nil
		}
		want, got := "no arguments", "none"
		if len(names) > 0 {
			want = strings.Join(names, " ")
		}
		if len(a) > 0 {
			got = fmt.Sprintf("%q", strings.Join(a, " "))
		}
		return usageErr("%swant %s, got %s; see `%s --help`", prefix(cmd), want, got, cmd.CommandPath())
	}
}

// run is the CLI: it parses args and runs one command.
func run(ctx context.Context, argv []string, stdout, stderr io.Writer) error {
	var g globalOptions
	root := newRootCommand(&g, stdout, stderr)
	root.SetArgs(argv)
	return root.ExecuteContext(ctx)
}
