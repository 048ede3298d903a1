package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput: each mistake issue 14 lists ends with one line naming the
// thing and the fix, an exit code from the table, and changes nothing.
func TestBadInput(t *testing.T) {
	b := newNodeEnv(t, freeAddr(t))
	a := newEnv(t)
	a.addVolume(t, bytes.Repeat([]byte{7}, testSize))
	img := filepath.Join(b.dir, "img")
	if err := os.WriteFile(img, make([]byte, 4*testSize), 0o600); err != nil {
		t.Fatal(err)
	}
	b.mustRun(t, "receive", "vol", "--from", a.id.ID, "--image", img, "--size", "2M")
	cfg := filepath.Join(b.dir, "state", "config.json")
	before, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		e    *env
		args []string
		code int
		want string
	}{
		{"two volumes into one image", b, []string{"receive", "other", "--from", a.id.ID, "--image", img, "--size", "2M"},
			exitBusy, "image " + img + " already holds the replica of vol: give other its own device or file"},
		{"re-target without --force", b, []string{"receive", "vol", "--from", a.id.ID, "--image", filepath.Join(b.dir, "img2"), "--size", "2M"},
			exitBusy, "vol is already received from " + a.id.ID + " into " + img},
		{"--force changes only the sender", b, []string{"receive", "vol", "--from", a.id.ID, "--image", filepath.Join(b.dir, "img2"), "--size", "2M", "--force"},
			exitUsage, "--force changes only the sender"},
		{"a mistyped device with --size", b, []string{"receive", "x", "--from", a.id.ID, "--image", "/dev/dmsync-no-such-sdx", "--size", "2M"},
			exitUsage, "image /dev/dmsync-no-such-sdx does not exist, and dmsync makes no files under /dev: check the device name (lsblk)"},
		{"an image smaller than --size", b, []string{"receive", "x", "--from", a.id.ID, "--image", img, "--size", "1G"},
			exitUsage, "holds 8388608 bytes, the volume needs 1073741824: use a larger device or file"},
		{"a missing image without --size", b, []string{"receive", "x", "--from", a.id.ID, "--image", filepath.Join(b.dir, "nope.img")},
			exitUsage, "does not exist: give its size (--size"},
		{"a relative image", b, []string{"receive", "x", "--from", a.id.ID, "--image", "img"},
			exitUsage, `image "img": give an absolute path`},
		{"a directory as image", b, []string{"receive", "x", "--from", a.id.ID, "--image", b.dir, "--size", "2M"},
			exitUsage, "is a directory: give a block device or a regular file"},
		{"a sender that is not an id", b, []string{"receive", "x", "--from", "bob", "--image", img},
			exitUsage, `sender "bob" is not a node id: copy it from ` + "`dmsync id`"},
		{"receive on a node that does not listen", a, []string{"receive", "x", "--from", b.id.ID, "--image", img, "--size", "2M"},
			exitUsage, "dmsyncd does not listen for peers: add --listen HOST:PORT"},
		{"replicate to an unpinned peer", a, []string{"replicate", "vol", "--to", b.id.ID},
			exitUsage, "pin it first with `dmsync peer add " + b.id.ID + " --addr HOST:PORT`"},
		{"replicate an unknown volume", a, []string{"replicate", "nope", "--to", b.id.ID},
			exitNoVolume, ""},
		{"peer add without a port", a, []string{"peer", "add", b.id.ID, "--addr", "b.example"},
			exitUsage, `peer address "b.example"`},
		{"wait for a volume not replicated", a, []string{"wait", "vol"},
			exitNoVolume, "start it with `dmsync replicate vol --to PEER`"},
		{"--crypt without --key-file", a, []string{"volume", "create", "v", "--data", "/dev/vdb", "--crypt", "luks2"},
			exitUsage, "--crypt luks2 needs --key-file FILE"},
		{"a key file that does not exist", a, []string{"volume", "create", "v", "--data", "/dev/vdb", "--crypt", "luks2", "--key-file", "/etc/dmsync/none.key"},
			exitUsage, "key file /etc/dmsync/none.key does not exist: create it"},
		{"remove a missing volume", a, []string{"volume", "remove", "nope"},
			exitNoVolume, "no volume named nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := tc.e.run(tc.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != tc.code || !strings.Contains(stderr, tc.want) || len(lines) != 1 || strings.Contains(stderr, "rpc error") {
				t.Errorf("%q: exit %d (want %d)\nstdout %q\nstderr %q\nwant   %q", tc.args, code, tc.code, out, stderr, tc.want)
			}
		})
	}
	after, err := os.ReadFile(cfg)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("refused requests changed config.json:\n%s\n%s", before, after)
	}
	if _, err := os.Stat("/dev/dmsync-no-such-sdx"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file appeared under /dev: %v", err)
	}
	for _, f := range []string{"img2", "nope.img"} {
		if _, err := os.Stat(filepath.Join(b.dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused receive created %s", f)
		}
	}
}

// TestReceiveWrongSizeIsRefusedFirst: a receive whose size contradicts
// the replica the store holds is refused before config.json changes, and
// the daemon goes on (it used to save it and then stop).
func TestReceiveWrongSizeIsRefusedFirst(t *testing.T) {
	b := newNodeEnv(t, freeAddr(t))
	a := newEnv(t)
	a.addVolume(t, bytes.Repeat([]byte{9}, testSize))
	img := filepath.Join(b.dir, "img")
	b.mustRun(t, "receive", "vol", "--from", a.id.ID, "--image", img, "--size", "2M")
	a.mustRun(t, "peer", "add", b.id.ID, "--addr", listenOf(b))
	a.mustRun(t, "replicate", "vol", "--to", b.id.ID, "--wait", "--timeout", "1m")
	b.mustRun(t, "receive", "remove", "vol")
	cfg := filepath.Join(b.dir, "state", "config.json")
	before, _ := os.ReadFile(cfg)
	_, stderr, code := b.run("receive", "vol", "--from", a.id.ID, "--image", img, "--size", "1M")
	if code != exitUsage || !strings.Contains(stderr, "a replica named vol of 2097152 bytes was received here before: give --size 2097152") {
		t.Fatalf("exit %d, %q", code, stderr)
	}
	if after, _ := os.ReadFile(cfg); !bytes.Equal(before, after) {
		t.Fatalf("config.json changed:\n%s", after)
	}
	if d := b.statusJSON(t); !d.OK {
		t.Fatalf("daemon after the refused receive: %+v", d)
	}
	// The right size takes it back, and A's next pass is accepted.
	b.mustRun(t, "receive", "vol", "--from", a.id.ID, "--image", img, "--size", "2M")
	a.mustRun(t, "resync", "vol")
	a.mustRun(t, "wait", "vol", "--timeout", "1m")
}
