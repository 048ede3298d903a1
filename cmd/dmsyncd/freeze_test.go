package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/dmtarget/dmtargettest"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/kerneltest"
	"github.com/dmsync/dmsync/logd/logapi"
)

const freezeUUID = "dmsync-fz"

// gatedDM is the fake dm whose suspends of gated devices block until the
// gate is opened, as a suspend waiting for in-flight I/O does.
type gatedDM struct {
	*dmtargettest.Fake
	gated string
	gate  chan struct{}
}

func (g *gatedDM) SuspendWith(ctx context.Context, name string, o dmtarget.SuspendOptions) error {
	if name == g.gated {
		<-g.gate
	}
	return g.Fake.SuspendWith(ctx, name, o)
}

// fakeStack makes a mirror with a userspace log (freezeUUID) and, on top
// of it, one device per entry of layers, each holding the device(s)
// named after it ("" = the mirror).
func fakeStack(t *testing.T, f *dmtargettest.Fake, layers [][2]string) {
	t.Helper()
	ctx := context.Background()
	mk := func(name, params string) {
		if _, err := f.Create(ctx, name, ""); err != nil {
			t.Fatal(err)
		}
		if err := f.Load(ctx, name, []dmtarget.Target{{Start: 0, Length: 2048, Type: strings.Fields(params)[0], Params: strings.Join(strings.Fields(params)[1:], " ")}}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Resume(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	mk("fz-mirror", "mirror userspace 4 "+freezeUUID+" core 1024 nosync 2 /dev/vdb 0 /dev/vdc 0 1 handle_errors")
	for _, l := range layers {
		var params []string
		for _, below := range strings.Fields(l[1]) {
			d, ok := f.Device(below)
			if !ok {
				t.Fatalf("no device %s", below)
			}
			params = append(params, fmt.Sprintf("%d:%d 0", dmtargettest.Major, d.Minor))
		}
		mk(l[0], "linear "+strings.Join(params, " "))
	}
}

// fakeHolders derives sysfs holders from the fake's tables: a device holds
// every device its table names by number.
func fakeHolders(f *dmtargettest.Fake) func(string) ([]dmtarget.Holder, error) {
	return func(kname string) ([]dmtarget.Holder, error) {
		var out []dmtarget.Holder
		for _, n := range f.Devices() {
			d, _ := f.Device(n)
			for _, t := range d.Live {
				if strings.Contains(" "+t.Params+" ", " "+fmt.Sprint(dmtargettest.Major)+":"+strings.TrimPrefix(kname, "dm-")+" ") {
					out = append(out, dmtarget.Holder{KName: dmtarget.KernelName(d.Minor), Name: d.Name})
				}
			}
		}
		return out, nil
	}
}

func testFreezer(t *testing.T, dm dmtarget.DM, f *dmtargettest.Fake) (*freezer, *syncBuf) {
	log := &syncBuf{}
	fz := newFreezer(slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	fz.openDM = func() (dmtarget.DM, error) { return dm, nil }
	fz.holders = fakeHolders(f)
	t.Cleanup(fz.close)
	return fz, log
}

func suspended(t *testing.T, f *dmtargettest.Fake, name string) bool {
	t.Helper()
	d, ok := f.Device(name)
	if !ok {
		t.Fatalf("no device %s", name)
	}
	return d.Suspended
}

// waitResumed waits until the device is no longer suspended.
func waitResumed(t *testing.T, f *dmtargettest.Fake, name string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); suspended(t, f, name); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still suspended after 10s", name)
		}
	}
}

// callsOf returns the fake's suspend and resume calls.
func callsOf(f *dmtargettest.Fake) []string {
	var out []string
	for _, c := range f.Calls() {
		if strings.HasPrefix(c, "suspend ") || strings.HasPrefix(c, "resume ") {
			out = append(out, c)
		}
	}
	return out
}

func TestFreezeNestedTopDown(t *testing.T) {
	f := dmtargettest.New()
	// mirror <- crypt <- top, and a second device "side" on the mirror.
	fakeStack(t, f, [][2]string{{"fz-crypt", "fz-mirror"}, {"fz-top", "fz-crypt"}, {"fz-side", "fz-mirror"}})
	before := len(callsOf(f))
	fz, _ := testFreezer(t, f, f)
	ctx := context.Background()
	fr, err := fz.Freeze(ctx, freezeUUID, time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"fz-top", "fz-crypt", "fz-side"}; !slices.Equal(fr.Devices, want) {
		t.Fatalf("devices %v, want %v (top-down)", fr.Devices, want)
	}
	if suspended(t, f, "fz-mirror") || !suspended(t, f, "fz-top") || !suspended(t, f, "fz-crypt") || !suspended(t, f, "fz-side") {
		t.Fatal("want every device above the mirror suspended, the mirror not")
	}
	if fr.Token == 0 || fr.FrozenAt.IsZero() {
		t.Fatalf("freeze %+v", fr)
	}
	held, pause, err := fz.Thaw(ctx, freezeUUID, fr.Token)
	if err != nil || !held || pause <= 0 {
		t.Fatalf("thaw: held=%v pause=%v err=%v", held, pause, err)
	}
	want := []string{"suspend fz-top nolockfs", "suspend fz-crypt nolockfs", "suspend fz-side nolockfs",
		"resume fz-side", "resume fz-crypt", "resume fz-top"}
	if got := callsOf(f)[before:]; !slices.Equal(got, want) {
		t.Fatalf("calls\n%q\nwant\n%q", got, want)
	}
	// fsfreeze: the suspend may lock the file system (no nolockfs).
	before = len(callsOf(f))
	fr, err = fz.Freeze(ctx, freezeUUID, time.Minute, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := callsOf(f)[before]; got != "suspend fz-top" {
		t.Fatalf("fsfreeze: %q, want a suspend that freezes the file system", got)
	}
	if _, _, err := fz.Thaw(ctx, freezeUUID, fr.Token); err != nil {
		t.Fatal(err)
	}
}

func TestFreezeAutoThaw(t *testing.T) {
	f := dmtargettest.New()
	fakeStack(t, f, [][2]string{{"fz-top", "fz-mirror"}})
	fz, log := testFreezer(t, f, f)
	ctx := context.Background()
	fr, err := fz.Freeze(ctx, freezeUUID, 50*time.Millisecond, false)
	if err != nil {
		t.Fatal(err)
	}
	waitResumed(t, f, "fz-top") // by itself: no Thaw yet
	held, pause, err := fz.Thaw(ctx, freezeUUID, fr.Token)
	if err != nil || held {
		t.Fatalf("thaw after the auto-thaw: held=%v err=%v, want held=false", held, err)
	}
	if pause <= 0 {
		t.Fatalf("pause %v", pause)
	}
	if s := log.String(); !strings.Contains(s, `level=WARN msg="auto-thaw`) || !strings.Contains(s, "fz-top") {
		t.Fatalf("no WARN naming the device:\n%s", s)
	}
	// The token thaws once.
	if _, _, err := fz.Thaw(ctx, freezeUUID, fr.Token); !errors.Is(err, logapi.ErrFreezeToken) {
		t.Fatalf("second thaw: %v", err)
	}
}

func TestFreezeTokenAndBusy(t *testing.T) {
	f := dmtargettest.New()
	fakeStack(t, f, [][2]string{{"fz-top", "fz-mirror"}})
	fz, _ := testFreezer(t, f, f)
	ctx := context.Background()
	fr, err := fz.Freeze(ctx, freezeUUID, time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fz.Freeze(ctx, freezeUUID, time.Minute, false); !errors.Is(err, logapi.ErrFrozen) {
		t.Fatalf("second freeze while one is held: %v, want ErrFrozen", err)
	}
	if _, _, err := fz.Thaw(ctx, freezeUUID, fr.Token+1); !errors.Is(err, logapi.ErrFreezeToken) {
		t.Fatalf("thaw with a wrong token: %v, want ErrFreezeToken", err)
	}
	if !suspended(t, f, "fz-top") {
		t.Fatal("a thaw with a wrong token resumed the device")
	}
	if _, _, err := fz.Thaw(ctx, "other-uuid", fr.Token); !errors.Is(err, logapi.ErrFreezeToken) {
		t.Fatalf("thaw of another volume: %v", err)
	}
	if held, _, err := fz.Thaw(ctx, freezeUUID, fr.Token); err != nil || !held {
		t.Fatalf("thaw: %v %v", held, err)
	}
	// Another freeze works once it is thawed.
	fr, err = fz.Freeze(ctx, freezeUUID, time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	// Someone else resumes the device: the freeze was not held.
	if _, err := f.Resume(ctx, "fz-top"); err != nil {
		t.Fatal(err)
	}
	if held, _, err := fz.Thaw(ctx, freezeUUID, fr.Token); err != nil || held {
		t.Fatalf("thaw after an outside resume: held=%v err=%v, want held=false", held, err)
	}
}

func TestFreezeRefusals(t *testing.T) {
	f := dmtargettest.New()
	fakeStack(t, f, nil) // a mirror with nothing on top
	fz, _ := testFreezer(t, f, f)
	ctx := context.Background()
	_, err := fz.Freeze(ctx, freezeUUID, 0, false)
	if !errors.Is(err, logapi.ErrFreezeUnavailable) || !strings.Contains(err.Error(), "put dm-crypt or a linear device on top") {
		t.Fatalf("no device on top: %v", err)
	}
	if _, err := fz.Freeze(ctx, "no-such-uuid", 0, false); !errors.Is(err, logd.ErrUnknownVolume) {
		t.Fatalf("unknown volume: %v", err)
	}
	// A device above the mirror that someone else suspended.
	fakeStack2 := dmtargettest.New()
	fakeStack(t, fakeStack2, [][2]string{{"fz-top", "fz-mirror"}})
	if err := fakeStack2.SuspendWith(ctx, "fz-top", dmtarget.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	fz2, _ := testFreezer(t, fakeStack2, fakeStack2)
	if _, err := fz2.Freeze(ctx, freezeUUID, 0, false); !errors.Is(err, logapi.ErrFreezeFailed) || !strings.Contains(err.Error(), "dmsetup resume fz-top") {
		t.Fatalf("a device suspended already: %v", err)
	}
	if !suspended(t, fakeStack2, "fz-top") {
		t.Fatal("the refused freeze resumed a device it had not suspended")
	}
	fz.openDM = func() (dmtarget.DM, error) { return nil, dmtarget.ErrUnsupported }
	fz.dm = nil
	if _, err := fz.Freeze(ctx, freezeUUID, 0, false); !errors.Is(err, logapi.ErrFreezeUnavailable) {
		t.Fatalf("no device-mapper: %v", err)
	}
}

// A suspend that does not return within the pause: Freeze fails, and the
// device is resumed once the suspend returns.
func TestFreezeSuspendTimeout(t *testing.T) {
	f := dmtargettest.New()
	fakeStack(t, f, [][2]string{{"fz-top", "fz-mirror"}})
	g := &gatedDM{Fake: f, gated: "fz-top", gate: make(chan struct{})}
	fz, log := testFreezer(t, g, f)
	ctx := context.Background()
	start := time.Now()
	_, err := fz.Freeze(ctx, freezeUUID, 100*time.Millisecond, false)
	if !errors.Is(err, logapi.ErrFreezeFailed) {
		t.Fatalf("freeze with a hung suspend: %v, want ErrFreezeFailed", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("freeze took %v: not bounded by the pause", time.Since(start))
	}
	if !strings.Contains(log.String(), "level=WARN") {
		t.Fatalf("no WARN:\n%s", log)
	}
	close(g.gate)               // the suspend returns (it went through: the device is suspended) ...
	waitResumed(t, f, "fz-top") // ... and is resumed at once
	// The volume can be frozen again.
	fr, err := fz.Freeze(ctx, freezeUUID, time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fz.Thaw(ctx, freezeUUID, fr.Token); err != nil {
		t.Fatal(err)
	}
}

// The supervisor resumes every frozen device when the replicator exits;
// the freeze goes through the log server's local API.
func TestFreezeReplicatorExitResumes(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	cfg := testConfig(t, "--log-level", "debug")
	log := &syncBuf{}
	d, err := openDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	f := dmtargettest.New()
	fakeStack(t, f, [][2]string{{"fz-top", "fz-mirror"}})
	d.freezer.openDM = func() (dmtarget.DM, error) { return f, nil }
	d.freezer.holders = fakeHolders(f)
	// The replicator: a process the test kills.
	var mu sync.Mutex
	var children []*exec.Cmd
	d.spawn = func(ctx context.Context, _ []*os.File, _ io.Writer) (*child, error) {
		cmd := exec.Command(sleep, "60")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		mu.Lock()
		children = append(children, cmd)
		mu.Unlock()
		c := &child{cmd: cmd, tail: &lastLines{}, done: make(chan error, 1)}
		go func() { c.done <- cmd.Wait() }()
		return c, nil
	}
	k := kerneltest.New()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.serve(ctx, func() (logd.Conn, error) { return k.Conn(), nil }) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	c, err := logapi.Dial(filepath.Join(cfg.stateDir, logSocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var fr logapi.Freeze
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if fr, err = c.Freeze(context.Background(), freezeUUID, logapi.MaxPause, false); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("freeze over the local API: %v", err)
	}
	if !slices.Equal(fr.Devices, []string{"fz-top"}) || !suspended(t, f, "fz-top") {
		t.Fatalf("freeze %+v", fr)
	}
	var first *exec.Cmd
	for first == nil {
		mu.Lock()
		if len(children) > 0 {
			first = children[0]
		}
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitResumed(t, f, "fz-top")
	if time.Since(start) >= logapi.MaxPause {
		t.Fatal("resumed only by the auto-thaw")
	}
	held, _, err := c.Thaw(context.Background(), freezeUUID, fr.Token)
	if err != nil || held {
		t.Fatalf("thaw after the replicator exited: held=%v err=%v, want held=false", held, err)
	}
	if s := log.String(); !strings.Contains(s, "the replicator exited") || !strings.Contains(s, "fz-top") {
		t.Fatalf("no WARN naming the device:\n%s", s)
	}
	// A wrong token and the busy case map back through gRPC.
	if fr, err = c.Freeze(context.Background(), freezeUUID, logapi.MaxPause, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Freeze(context.Background(), freezeUUID, logapi.MaxPause, false); !errors.Is(err, logapi.ErrFrozen) {
		t.Fatalf("second freeze over the API: %v", err)
	}
	if _, _, err := c.Thaw(context.Background(), freezeUUID, fr.Token+7); !errors.Is(err, logapi.ErrFreezeToken) {
		t.Fatalf("wrong token over the API: %v", err)
	}
	// The log server's shutdown resumes it.
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	served <- nil
	if suspended(t, f, "fz-top") {
		t.Fatal("still suspended after the log server stopped")
	}
	mu.Lock()
	for _, c := range children {
		_ = c.Process.Kill()
	}
	mu.Unlock()
}
