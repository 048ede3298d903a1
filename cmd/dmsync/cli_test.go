package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/dmsync/dmsync/internal/version"
)

// runNoDaemon runs the CLI against a socket that does not exist.
func runNoDaemon(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	sock := filepath.Join(t.TempDir(), "dmsync.sock")
	err := run(context.Background(), append([]string{"--socket", sock}, args...), &out, &errb)
	if err != nil {
		errb.WriteString("dmsync: " + err.Error() + "\n")
	}
	return out.String(), errb.String(), exitCode(err)
}

// TestEveryCommandHasHelp walks the command tree: every command has a
// short description and an example, and its help renders without a
// doubled "usage".
func TestEveryCommandHasHelp(t *testing.T) {
	var g globalOptions
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		n++
		if c.Short == "" {
			t.Errorf("%s: no short description", c.CommandPath())
		}
		if c.Example == "" {
			t.Errorf("%s: no example in its help", c.CommandPath())
		}
		path := strings.Fields(c.CommandPath())[1:]
		out, stderr, code := runNoDaemon(t, append(path, "--help")...)
		if code != 0 || stderr != "" {
			t.Errorf("%s --help: exit %d, stderr %q", c.CommandPath(), code, stderr)
		}
		if strings.Contains(strings.ToLower(out), "usage: usage") || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help:\n%s", c.CommandPath(), out)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand(&g, io.Discard, io.Discard))
	if n < 15 {
		t.Fatalf("walked %d commands: the tree is not what this test expects", n)
	}
}

func TestVersion(t *testing.T) {
	old := version.Version
	version.Version = "1.2.3-test"
	defer func() { version.Version = old }()
	out, _, code := runNoDaemon(t, "--version")
	if code != 0 || out != "dmsync 1.2.3-test\n" {
		t.Fatalf("--version: exit %d, %q", code, out)
	}
}

func TestCompletionAndMan(t *testing.T) {
	out, stderr, code := runNoDaemon(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "__start_dmsync") {
		t.Fatalf("completion bash: exit %d %q\n%.200s", code, stderr, out)
	}
	dir := filepath.Join(t.TempDir(), "man8")
	if _, stderr, code := runNoDaemon(t, "man", dir); code != 0 {
		t.Fatalf("man: exit %d %q", code, stderr)
	}
	for _, page := range []string{"dmsync.8", "dmsync-volume-create.8", "dmsync-replicate.8"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil || !bytes.Contains(b, []byte(".TH")) {
			t.Errorf("man page %s: %v", page, err)
		}
	}
}

// TestUsageErrors: a command-line mistake is one line naming the command
// and the fix, exit 2, and never reaches the daemon (the socket does not
// exist, so a dial would give exit 3).
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give a command (events, id, init, peer, receive, replicate, resync, snapshot, status, verify, volume, wait); see `dmsync --help`"},
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"wait"}, "wait: want VOLUME, got none; see `dmsync wait --help`"},
		{[]string{"wait", "a", "b"}, `wait: want VOLUME, got "a b"`},
		{[]string{"wait", "v", "--timeout", "soon"}, `wait: invalid argument "soon" for "--timeout" flag`},
		{[]string{"status", "--bogus"}, "status: unknown flag: --bogus; see `dmsync status --help`"},
		{[]string{"volume", "create", "v", "--data", "/dev/vdb", "--crypt", "luks2"}, "volume create v: --crypt luks2 needs --key-file FILE"},
		{[]string{"volume", "create", "v", "--data", "/dev/vdb", "--crypt", "aes"}, `volume create v: --crypt "aes": want luks2 or plain`},
		{[]string{"volume", "create", "v", "--data", "/dev/vdb", "--key-file", "/k"}, "volume create v: --key-file needs --crypt luks2 or --crypt plain"},
		{[]string{"volume", "create", "v", "--data", "/dev/vdb", "--log", "disk"}, `--log "disk": want userspace or core`},
		{[]string{"volume", "create", "v"}, "volume create v: --data DEVICE is required"},
		{[]string{"peer", "add", "x"}, "peer add x: --addr HOST:PORT is required"},
		{[]string{"replicate", "v"}, "replicate v: --to PEER is required"},
		{[]string{"replicate", "v", "--to", "p", "--timeout", "1m"}, "replicate v: --timeout only applies with --wait"},
		{[]string{"replicate", "v", "--to", "p", "--point-interval", "-5m"}, "replicate v: --point-interval -5m0s is negative"},
		{[]string{"snapshot"}, "snapshot: want VOLUME, got none; see `dmsync snapshot --help`"},
		{[]string{"receive", "v", "--from", "p"}, "receive v: --from PEER and --image PATH are required"},
		{[]string{"receive", "v", "--from", "p", "--image", "/i", "--size", "big"}, `receive v: --size "big": want a size such as 100G`},
	} {
		out, stderr, code := runNoDaemon(t, tc.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != exitUsage || !strings.Contains(stderr, tc.want) || len(lines) != 1 || out != "" {
			t.Errorf("%q: exit %d (want %d)\nstderr %q\nwant   %q\nstdout %q", tc.args, code, exitUsage, stderr, tc.want, out)
		}
	}
}

func TestInitRotate(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"init", "--state-dir", dir}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	first := strings.TrimSpace(out.String())
	if _, stderr, code := runNoDaemon(t, "init", "--state-dir", dir); code != exitBusy || !strings.Contains(stderr, "identity already exists") {
		t.Fatalf("init twice: exit %d %q", code, stderr)
	}
	out.Reset()
	errb.Reset()
	if err := run(context.Background(), []string{"init", "--state-dir", dir, "--rotate"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	second := strings.TrimSpace(out.String())
	if second == first || !strings.Contains(errb.String(), second+" replaces "+first) {
		t.Fatalf("rotate: %q -> %q\n%s", first, second, errb.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"id", "--state-dir", dir}, &out, &errb); err != nil || strings.TrimSpace(out.String()) != second {
		t.Fatalf("id after rotate: %q %v", out.String(), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node.key.retired-"+first)); err != nil {
		t.Fatalf("old key not kept: %v", err)
	}
	if _, stderr, code := runNoDaemon(t, "init", "--state-dir", t.TempDir(), "--rotate"); code != exitFailure || !strings.Contains(stderr, "run `dmsync init` first") {
		t.Fatalf("rotate without a key: exit %d %q", code, stderr)
	}
}
