package demo

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	cmd    *exec.Cmd
	log    *syncBuffer
	id     string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newNode(t *testing.T, g *guesttest.G, name, netns string, args ...string) *node {
	n := &node{
		name: name, g: g, dir: "/var/lib/dmsync-" + name, socket: "/run/dmsync-" + name + ".sock",
		netns: netns, args: args, log: &syncBuffer{},
	}
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	n.id = strings.TrimSpace(g.Run(g.Bin("dmsync"), "init", "--state-dir", n.dir))
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			t.Logf("dmsyncd %s log:\n%s", n.name, n.log)
		}
	})
	return n
}

// start runs the node's dmsyncd and waits until it reports READY to its
// notify socket and its admin socket accepts.
func (n *node) start(t *testing.T) {
	t.Helper()
	notify := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	argv := append([]string{n.g.Bin("dmsyncd"), "--state-dir", n.dir, "--admin-socket", n.socket}, n.args...)
	if n.netns != "" {
		argv = append([]string{"ip", "netns", "exec", n.netns}, argv...)
	}
	n.cmd = exec.Command(argv[0], argv[1:]...)
	n.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	var w io.Writer = n.log
	if verboseDaemons {
		w = io.MultiWriter(n.log, &prefixWriter{prefix: "[dmsyncd " + n.name + "] ", w: os.Stdout})
	}
	n.cmd.Stdout, n.cmd.Stderr = w, w
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 256)
	if k, _, err := l.ReadFromUnix(buf); err != nil || !strings.HasPrefix(string(buf[:k]), "READY=1") {
		t.Fatalf("dmsyncd %s not ready: %q %v\n%s", n.name, buf[:k], err, n.log)
	}
	for i := 0; ; i++ {
		c, err := net.Dial("unix", n.socket)
		if err == nil {
			c.Close()
			return
		}
		if i == 100 {
			t.Fatalf("dmsyncd %s: admin socket %s: %v\n%s", n.name, n.socket, err, n.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the daemon with SIGTERM (a clean shutdown).
func (n *node) stop(t *testing.T) {
	if n.cmd == nil || n.cmd.ProcessState != nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- n.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("dmsyncd %s exit after SIGTERM: %v", n.name, err)
		}
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		<-done
		t.Errorf("dmsyncd %s ignored SIGTERM for 30s", n.name)
	}
}

// verboseDaemons streams the daemons' logs to the console as they happen.
const verboseDaemons = true

type prefixWriter struct {
	mu     sync.Mutex
	prefix string
	w      io.Writer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l != "" {
			io.WriteString(p.w, p.prefix+l)
		}
	}
	return len(b), nil
}

// cliStream runs the dmsync CLI and also shows its output as it comes.
func (n *node) cliStream(args ...string) string {
	n.g.T().Helper()
	var out syncBuffer
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
		if err != nil || info.IsDir() || found != "" {
			return nil
		}
		if deviceContains(t, p, marker) {
			found = p
		}
		return nil
	})
	return found
}
