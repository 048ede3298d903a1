// Command dmsyncd is the dmsync daemon: it serves the device-mapper
// userspace dirty log for dmsync's mirrors, keeps that log in Pebble under
// --state-dir, and replicates changed regions to peers. Run one per
// machine, as root, in the initial network namespace; a second instance
// refuses to start and names the first (same state dir, same admin socket
// or same kernel connector).
//
// # Two processes
//
// While nothing answers the kernel's dirty-log requests, every write to
// every mirror blocks. One Go process cannot keep the log server safe from
// the rest of the daemon: a panic in any goroutine without its own recover,
// a runtime fatal error (a concurrent map write), a deadlock, the OOM
// killer (an unbounded peer has taken a receiver to 2.8 GB RSS) or GC
// pauses from replication's allocations would all hit the log server if it
// shared the process. So dmsyncd runs as two processes of this binary:
//
//   - The log server (the process systemd starts): it takes the state-dir
//     lock and the host-wide connector lock, opens only the dirty log's
//     Pebble (state-dir/pebble), binds the kernel connector and serves a
//     small local API (package logd/logapi) on a root-only unix socket,
//     state-dir/logd.sock. It needs nothing else to start, comes up first,
//     and answers the kernel whatever else is broken. It owns the admin
//     socket's listener too, so that the CLI gets an answer naming the
//     problem while the replicator is down. It also freezes a volume's
//     top devices for a consistency point when the replicator asks
//     (freeze.go), and resumes them by itself after the pause asked for,
//     when the replicator exits and when it stops: a device left
//     suspended would block every write to the volume.
//   - The replicator (a child started as `dmsyncd __replicator ...`): the
//     admin API for the CLI, volumes through dmtarget, senders and the
//     receiver, the --listen peer listener, config.json and the node
//     identity, with its own Pebble for replica state (state-dir/replica).
//     It talks to the dirty log only through the local API.
//
// The log server supervises the replicator: it restarts it with backoff
// when it exits or panics, stops it on SIGTERM, and the child gets SIGKILL
// (Pdeathsig) if the log server dies, so it never outlives it. Each exit is
// logged at error level and shown in the health call, `dmsync status` and
// systemd's STATUS= line: "replicator down: <reason>, restarting in Ns".
// Failures inside the replicator (config.json, the node key, the listen
// port, a receive image) are reported to the log server and shown the same
// way; the rest keeps running.
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
	// exitRestart: the replicator asks to be started again at once (its
	// configuration was fixed).
	exitRestart = 75
)

// childRole is the hidden first argument that makes dmsyncd the replicator.
const childRole = "__replicator"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	var err error
	if len(os.Args) > 1 && os.Args[1] == childRole {
		err = runReplicator(ctx, os.Args[2:], os.Stderr)
	} else {
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	if errors.Is(err, errReexec) {
		fmt.Fprintln(os.Stderr, "dmsyncd: starting again to reopen the state store")
		err = reexec() // returns only on failure: systemd restarts the unit
	}
	os.Exit(exitCode(err))
}

func exitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.Is(err, errRestart):
		return exitRestart
	default:
		fmt.Fprintln(os.Stderr, "dmsyncd:", err)
		return exitError
	}
}
