// Package guesttest is what a real-kernel test uses inside the dmsync test
// guest (see test/vm): a check that the test really runs in the guest, the
// guest's scratch disks, and small helpers to run the guest's tools.
//
// A real-kernel test is named TestKernel... and starts with Require:
//
//	func TestKernelMirrorCore(t *testing.T) {
//		g := guesttest.Require(t)
//		a, b := g.Disk(0), g.Disk(1)
//		g.Run("dmsetup", "create", ...)
//	}
//
// Outside the guest Require skips the test with the reason, so plain
// `go test ./...` runs unit tests everywhere; `make test` boots the guest and
// runs every TestKernel test of the packages listed in test/vm.
package guesttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CmdlineFlag is the kernel command-line word the harness passes to mark
// the dmsync test guest.
const CmdlineFlag = "dmsync.guest=1"

// InGuest reports whether this process runs inside the dmsync test guest.
func InGuest() bool {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return false
	}
	for _, w := range strings.Fields(string(b)) {
		if w == CmdlineFlag {
			return true
		}
	}
	return false
}

// G is the guest as seen by one test.
type G struct {
	t testing.TB
}

// Require skips t unless it runs inside the dmsync test guest, and returns
// the guest's helpers.
func Require(t testing.TB) *G {
	t.Helper()
	if !InGuest() {
		t.Skip("real-kernel test: runs only inside the dmsync QEMU guest (make test, or go test ./test/vm with DMSYNC_VM=1)")
	}
	return &G{t: t}
}

// T returns the test the guest helpers report to.
func (g *G) T() testing.TB { return g.t }

// Disk returns the path of the guest's i-th scratch disk (/dev/vda, /dev/vdb, ...).
// The test fails if the disk does not exist.
func (g *G) Disk(i int) string {
	g.t.Helper()
	p := "/dev/vd" + string(rune('a'+i))
	if _, err := os.Stat(p); err != nil {
		g.t.Fatalf("scratch disk %d: %v (the harness attaches disks; raise vm.Config.Disks)", i, err)
	}
	return p
}

// Run runs a command with a 2-minute limit, fails the test if it fails, and
// returns its standard output.
func (g *G) Run(name string, args ...string) string {
	g.t.Helper()
	out, err := g.Try(name, args...)
	if err != nil {
		g.t.Fatalf("%v", err)
	}
	return out
}

// RunTimeout is Run with another time limit than 2 minutes.
func (g *G) RunTimeout(limit time.Duration, name string, args ...string) string {
	g.t.Helper()
	out, err := g.try(limit, name, args...)
	if err != nil {
		g.t.Fatalf("%v", err)
	}
	return out
}

// Try runs a command like Run but returns its error (which includes the
// command line and its standard error) instead of failing the test.
func (g *G) Try(name string, args ...string) (string, error) {
	g.t.Helper()
	return g.try(2*time.Minute, name, args...)
}

func (g *G) try(limit time.Duration, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return stdout.String(), fmt.Errorf("%s %s: %w\nstderr: %s", name, strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String(), nil
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		return stdout.String(), fmt.Errorf("%s %s: timed out after %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), limit, stdout.String(), stderr.String())
	}
}

// Bin returns the path of a dmsync binary the harness put into the guest
// (dmsyncd, dmsync).
func (g *G) Bin(name string) string {
	g.t.Helper()
	p := filepath.Join("/dmsync/bin", name)
	if _, err := os.Stat(p); err != nil {
		g.t.Fatalf("binary %s not in the guest: %v (list it in test/vm's Binaries)", name, err)
	}
	return p
}

// Cleanup registers a best-effort cleanup command (e.g. dmsetup remove)
// that runs when the test ends; its failure is logged, not fatal.
func (g *G) Cleanup(name string, args ...string) {
	g.t.Cleanup(func() {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			g.t.Logf("cleanup %s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
	})
}
