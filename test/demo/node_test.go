package demo

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmsync/dmsync/internal/guesttest"
)

// node is one dmsync node of the story: a dmsyncd with its own state
// directory and admin socket, optionally in a network namespace.
type node struct {
	name   string
	g      *guesttest.G
	dir    string
	socket string
	netns  string // "" = the initial namespace (where the kernel's connector is)
	args   []string
	d      *guesttest.Daemon
	id     string
}

func newNode(t *testing.T, g *guesttest.G, name, netns string, args ...string) *node {
	n := &node{
		name: name, g: g, dir: "/var/lib/dmsync-" + name, socket: "/run/dmsync-" + name + ".sock",
		netns: netns, args: args,
	}
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	n.id = strings.TrimSpace(g.Run(g.Bin("dmsync"), "init", "--state-dir", n.dir))
	return n
}

// start runs the node's dmsyncd and waits until it is ready and its admin
// socket accepts.
func (n *node) start(t *testing.T) {
	t.Helper()
	n.d = n.g.StartDaemon(guesttest.DaemonOptions{
		StateDir: n.dir, NetNS: n.netns, Args: append([]string{"--admin-socket", n.socket}, n.args...),
	})
	for i := 0; ; i++ {
		c, err := net.Dial("unix", n.socket)
		if err == nil {
			c.Close()
			return
		}
		if i == 100 {
			t.Fatalf("dmsyncd %s: admin socket %s: %v\n%s", n.name, n.socket, err, n.d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cliStream runs the dmsync CLI and also shows its output as it comes.
func (n *node) cliStream(args ...string) string {
	n.g.T().Helper()
	var out bytes.Buffer
	cmd := exec.Command(n.g.Bin("dmsync"), append([]string{"--socket", n.socket}, args...)...)
	cmd.Stdout = io.MultiWriter(&out, os.Stdout)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		n.g.T().Fatalf("dmsync %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// cli runs the dmsync CLI against this node's daemon.
func (n *node) cli(args ...string) string {
	return n.g.RunTimeout(20*time.Minute, n.g.Bin("dmsync"), append([]string{"--socket", n.socket}, args...)...)
}

// makeNetns creates a network namespace joined to the initial one by a
// veth pair: hostAddr on this side, nsAddr inside.
func makeNetns(t *testing.T, g *guesttest.G, name, hostAddr, nsAddr string) {
	t.Helper()
	g.Run("ip", "netns", "add", name)
	t.Cleanup(func() { g.Try("ip", "netns", "delete", name) })
	g.Run("ip", "link", "add", "veth-"+name, "type", "veth", "peer", "name", "eth0", "netns", name)
	g.Run("ip", "addr", "add", hostAddr+"/24", "dev", "veth-"+name)
	g.Run("ip", "link", "set", "veth-"+name, "up")
	g.Run("ip", "netns", "exec", name, "ip", "addr", "add", nsAddr+"/24", "dev", "eth0")
	g.Run("ip", "netns", "exec", name, "ip", "link", "set", "eth0", "up")
	g.Run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
	if out, err := g.Try("ping", "-c", "1", "-W", "5", nsAddr); err != nil {
		t.Fatalf("namespace %s unreachable at %s: %v %s", name, nsAddr, err, out)
	}
}

// deviceContains reports whether the device or file at path contains
// marker anywhere, read with O_DIRECT where possible.
func deviceContains(t *testing.T, path string, marker []byte) bool {
	t.Helper()
	size, err := guesttest.DeviceSize(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const step = 4 << 20
	buf := make([]byte, step+len(marker))
	var carry int
	for off := int64(0); off < size; off += step {
		n, err := f.ReadAt(buf[carry:carry+step], off)
		if n == 0 && err != nil {
			break
		}
		if bytes.Contains(buf[:carry+n], marker) {
			return true
		}
		k := carry + n
		keep := min(len(marker), k)
		carry = copy(buf, buf[k-keep:k])
	}
	return false
}

// treeContains reports whether any file under dir contains marker.
func treeContains(t *testing.T, dir string, marker []byte) string {
	t.Helper()
	var found string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		// Only regular files: the state dir also holds the daemon's sockets.
		if err != nil || !info.Mode().IsRegular() || found != "" {
			return nil
		}
		if deviceContains(t, p, marker) {
			found = p
		}
		return nil
	})
	return found
}

// linearDevices creates, for each name, a linear dm device of size bytes
// over the start of a freshly wiped scratch disk (disks[i] for names[i]),
// removed when the test ends.
func linearDevices(t *testing.T, g *guesttest.G, size int64, names []string, disks []int) {
	t.Helper()
	for i, name := range names {
		g.Run("dmsetup", "create", name, "--table", fmt.Sprintf("0 %d linear %s 0", size/512, g.WipeDisk(disks[i])))
		t.Cleanup(func() { g.Try("dmsetup", "remove", "--force", name) })
	}
}

// randomKeyFile writes a new random 64-byte key (plain dm-crypt,
// aes-xts-plain64 with 512 bits) to path.
func randomKeyFile(t *testing.T, path string) string {
	t.Helper()
	k := make([]byte, 64)
	rand.Read(k)
	if err := os.WriteFile(path, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// removeVolume runs `dmsync volume remove` on the node, retrying for 20 s:
// reads of a just-killed replicator may hold the mirror open a moment.
func (n *node) removeVolume(t *testing.T, name string) {
	t.Helper()
	for i := 0; ; i++ {
		out, err := n.g.Try(n.g.Bin("dmsync"), "--socket", n.socket, "volume", "remove", name)
		if err == nil {
			return
		}
		if i == 20 {
			t.Fatalf("volume remove %s: %v\n%s", name, err, out)
		}
		t.Logf("volume remove %s, try %d: %v", name, i+1, err)
		time.Sleep(time.Second)
	}
}
