package main

import (
	"encoding/json"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (e *env) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, code := e.run(args...)
	if code != 0 {
		t.Fatalf("dmsync %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

func (e *env) statusJSON(t *testing.T) statusDoc {
	t.Helper()
	out, _, _ := e.run("status", "--json")
	var d statusDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return d
}

// TestReplicationLifecycle drives two daemons (A sends, B receives over
// real mutual TLS) through the CLI: B receives by A's volume name, A
// replicates and waits, then every undo verb.
func TestReplicationLifecycle(t *testing.T) {
	b := newNodeEnv(t, freeAddr(t))
	a := newEnv(t)
	r := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, testSize)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	a.addVolume(t, data)
	replica := filepath.Join(b.dir, "replica.img")
	// A device-sized image larger than the volume: fine with --size.
	if err := os.WriteFile(replica, make([]byte, 3*testSize), 0o600); err != nil {
		t.Fatal(err)
	}
	out := b.mustRun(t, "receive", "vol", "--from", a.id.ID, "--image", replica, "--size", "2M")
	if !strings.Contains(out, "receiving vol (2M) from "+a.id.ID) {
		t.Fatalf("receive: %q", out)
	}
	a.mustRun(t, "peer", "add", b.id.ID, "--addr", listenOf(b))
	out = a.mustRun(t, "replicate", "vol", "--to", b.id.ID, "--wait", "--timeout", "1m")
	if !strings.Contains(out, "vol: replicated: nothing pending") {
		t.Fatalf("replicate --wait: %q", out)
	}
	got, err := os.ReadFile(replica)
	if err != nil || string(got[:testSize]) != string(data) {
		t.Fatalf("replica differs after wait (%v)", err)
	}
	d := a.statusJSON(t)
	if !d.OK || len(d.Sends) != 1 || d.Sends[0].State != "synced" || d.Sends[0].Name != "vol" || d.Sends[0].RecoveryPoint.Time == nil {
		t.Fatalf("status after wait: %+v", d)
	}
	if out := a.mustRun(t, "verify", "vol"); !strings.Contains(out, "equal") {
		t.Fatalf("verify: %q", out)
	}
	bd := b.statusJSON(t)
	// No device-mapper here, so no freeze: the replica is written in
	// place and holds no consistency point, and says so.
	if !bd.OK || len(bd.Receives) != 1 || bd.Receives[0].State != "no-point" || bd.Receives[0].Volume != "vol" {
		t.Fatalf("B's status: %+v", bd)
	}

	// resync: everything pending again, and sent again.
	if out := a.mustRun(t, "resync", "vol"); !strings.Contains(out, "vol: 32 regions (2M) pending again") {
		t.Fatalf("resync: %q", out)
	}
	a.mustRun(t, "wait", "vol", "--timeout", "1m")

	// Undo, with the mistakes on the way.
	for _, tc := range []struct {
		e    *env
		args []string
		code int
		want string
	}{
		{a, []string{"peer", "remove", b.id.ID}, exitBusy, "is in use by the send of vol (`dmsync replicate stop vol`)"},
		{a, []string{"replicate", "vol", "--to", b.id.ID, "--as", "other"}, exitBusy, ""},
		{b, []string{"receive", "vol", "--from", a.id.ID, "--image", filepath.Join(b.dir, "elsewhere.img"), "--size", "2M"}, exitBusy, "to change its sender add --force; to change anything else `dmsync receive remove vol` first"},
		{b, []string{"receive", "vol2", "--from", a.id.ID, "--image", replica, "--size", "2M"}, exitBusy, "image " + replica + " already holds the replica of vol: give vol2 its own device or file"},
		{a, []string{"replicate", "stop", "nope"}, exitNoVolume, "nope is not replicated"},
		{b, []string{"receive", "remove", "nope"}, exitNoVolume, "nope is not received here"},
		{a, []string{"resync", "nope"}, exitNoVolume, ""},
		{a, []string{"peer", "remove", "not-an-id"}, exitUsage, `peer "not-an-id" is not a node id`},
	} {
		out, stderr, code := tc.e.run(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%q: exit %d (want %d)\nstdout %q\nstderr %q\nwant   %q", tc.args, code, tc.code, out, stderr, tc.want)
		}
	}
	if out := a.mustRun(t, "replicate", "stop", "vol"); out != "stopped replicating vol to "+b.id.ID+"\n" {
		t.Fatalf("replicate stop: %q", out)
	}
	if _, stderr, code := a.run("wait", "vol"); code != exitNoVolume {
		t.Fatalf("wait after stop: %d %q", code, stderr)
	}
	if out := a.mustRun(t, "peer", "remove", b.id.ID); !strings.Contains(out, "removed and its key revoked") {
		t.Fatalf("peer remove: %q", out)
	}
	if out := b.mustRun(t, "peer", "revoke", a.id.ID, "--force"); !strings.Contains(out, "no longer receiving vol") {
		t.Fatalf("peer revoke --force on B: %q", out)
	}
	if d := b.statusJSON(t); len(d.Receives) != 0 {
		t.Fatalf("receive left after revoke: %+v", d.Receives)
	}
}

func listenOf(e *env) string {
	out, _, _ := e.run("status", "--json")
	var d statusDoc
	json.Unmarshal([]byte(out), &d)
	return d.Node.Listen
}
