package main

// The log server's freezer: it suspends the dm devices stacked on a
// volume's mirror for a consistency point and makes sure they are resumed.
//
// It lives in the log server, not in the replicator that asks for it: a
// device left suspended blocks every write to the volume, and the
// replicator can be killed at any moment. The log server resumes every
// device it suspended when the pause asked for has passed (auto-thaw),
// when the replicator exits and when it stops itself.
//
// The suspend ioctl waits for the device's in-flight I/O, which the mirror
// completes only while the log server answers the kernel. So the ioctls
// run on goroutines of their own (never on the connector's), and a Freeze
// gives up on a suspend that has not returned within the pause: it
// reports failure and resumes the device once the ioctl returns.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/logapi"
)

// maxHolderDepth bounds the walk up the holders (a cycle in sysfs would be
// a kernel bug, but the walk must end anyway).
const maxHolderDepth = 16

// resumeWait bounds how long a release waits for suspends still running
// before it returns (they are resumed in the background once they return).
var resumeWait = logapi.MaxPause + 5*time.Second

// freezer implements logapi.Freezer in the log server.
type freezer struct {
	log *slog.Logger
	// openDM opens device-mapper; it is called until it succeeds (the
	// log server starts and serves without it).
	openDM func() (dmtarget.DM, error)
	// holders lists the devices stacked on the block device with that
	// kernel name (sysfs).
	holders func(kname string) ([]dmtarget.Holder, error)

	mu     sync.Mutex
	dm     dmtarget.DM
	next   uint64             // last token handed out
	vols   map[string]*frozen // by log uuid: the current or last freeze
	closed bool
	bg     sync.WaitGroup // resumes running in the background
	// dir holds the durable freeze records (freezerecord.go); "": none.
	dir string
}

var _ logapi.Freezer = (*freezer)(nil)

func newFreezer(log *slog.Logger) *freezer {
	return &freezer{
		log: log,
		openDM: func() (dmtarget.DM, error) {
			return dmtarget.Open(dmtarget.Options{Logger: log})
		},
		holders: func(kname string) ([]dmtarget.Holder, error) { return dmtarget.Holders("", kname) },
		vols:    map[string]*frozen{},
	}
}

type freezeState int

const (
	stateFreezing freezeState = iota // suspends running
	stateHeld                        // every device suspended, until Thaw or the auto-thaw
	stateReleased                    // resumed or being resumed
)

// frozen is one freeze of one volume. Fields after mu's comment are
// guarded by freezer.mu.
type frozen struct {
	uuid    string
	token   uint64
	done    chan struct{} // closed once the suspend goroutine has finished
	resumed chan struct{} // closed once every suspended device was resumed

	// Guarded by freezer.mu (set once before the suspends start, read
	// without the lock after fv.done).
	devices []string // to suspend, top first
	start   time.Time

	// Guarded by freezer.mu.
	suspended  []string // suspends that returned without error, in order
	suspendErr error
	state      freezeState
	why        string // why it was released
	frozenAt   time.Time
	timer      *time.Timer
	pause      time.Duration // from start until resumed; set on resume
	resumeErr  error
}

// device returns device-mapper, opening it on first use.
func (f *freezer) device() (dmtarget.DM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dm != nil {
		return f.dm, nil
	}
	dm, err := f.openDM()
	if err != nil {
		return nil, fmt.Errorf("%w: device-mapper: %w", logapi.ErrFreezeUnavailable, err)
	}
	f.dm = dm
	return dm, nil
}

// Freeze implements logapi.Freezer.
func (f *freezer) Freeze(ctx context.Context, uuid string, maxPause time.Duration, fsfreeze bool) (logapi.Freeze, error) {
	pause := logapi.ClampPause(maxPause)
	dm, err := f.device()
	if err != nil {
		return logapi.Freeze{}, err
	}
	f.mu.Lock()
	for {
		if f.closed {
			f.mu.Unlock()
			return logapi.Freeze{}, fmt.Errorf("%w: volume %s: the log server is stopping", logapi.ErrFreezeFailed, uuid)
		}
		old := f.vols[uuid]
		if old == nil {
			break
		}
		if old.state != stateReleased {
			f.mu.Unlock()
			return logapi.Freeze{}, fmt.Errorf("%w: volume %s: freeze %d of %s is still held: thaw it first (or wait for its auto-thaw)",
				logapi.ErrFrozen, uuid, old.token, old.devices)
		}
		select {
		case <-old.resumed:
			if f.vols[uuid] == old {
				delete(f.vols, uuid) // its Thaw now finds no token
			}
			continue
		default:
		}
		// The last freeze is still being resumed.
		f.mu.Unlock()
		select {
		case <-old.resumed:
		case <-time.After(pause):
			return logapi.Freeze{}, fmt.Errorf("%w: volume %s: the devices of freeze %d (%s) are still being resumed", logapi.ErrFreezeFailed, uuid, old.token, old.why)
		case <-ctx.Done():
			return logapi.Freeze{}, fmt.Errorf("volume %s: %w", uuid, ctx.Err())
		}
		f.mu.Lock()
	}
	f.next++
	fv := &frozen{uuid: uuid, token: f.next, done: make(chan struct{}), resumed: make(chan struct{})}
	f.vols[uuid] = fv // reserved: a second Freeze fails from here on
	f.mu.Unlock()

	devs, err := f.topDevices(ctx, dm, uuid)
	if err == nil {
		err = notSuspended(ctx, dm, uuid, devs)
	}
	f.mu.Lock()
	if err != nil {
		if f.vols[uuid] == fv {
			delete(f.vols, uuid)
		}
		close(fv.done) // nothing was suspended (a releaser may wait on it)
		f.mu.Unlock()
		return logapi.Freeze{}, err
	}
	fv.devices = devs
	f.mu.Unlock()
	if err := f.recordFreeze(fv); err != nil {
		f.mu.Lock()
		if f.vols[uuid] == fv {
			delete(f.vols, uuid)
		}
		close(fv.done)
		f.mu.Unlock()
		return logapi.Freeze{}, fmt.Errorf("%w: volume %s: %w", logapi.ErrFreezeFailed, uuid, err)
	}
	f.mu.Lock()
	fv.start = time.Now()
	f.mu.Unlock()
	opts := dmtarget.SuspendOptions{NoLockFS: !fsfreeze}
	go f.suspendAll(dm, fv, opts)
	deadline := time.NewTimer(pause)
	defer deadline.Stop()
	timedOut := false
	select {
	case <-fv.done:
	case <-deadline.C:
		timedOut = true
	}

	f.mu.Lock()
	switch {
	case fv.state == stateReleased:
		// The replicator exited or the log server stops: the releaser
		// resumes what was suspended.
		why := fv.why
		f.mu.Unlock()
		return logapi.Freeze{}, fmt.Errorf("%w: volume %s: freeze of %s cancelled: %s", logapi.ErrFreezeFailed, uuid, devs, why)
	case timedOut:
		f.releaseLocked(fv, fmt.Sprintf("the suspend did not return within %s", pause))
		f.mu.Unlock()
		f.log.Warn("freeze failed: a suspend did not return within the pause; resuming the devices once it returns",
			"uuid", uuid, "devices", devs, "max_pause", pause)
		f.resumeInBackground(fv)
		return logapi.Freeze{}, fmt.Errorf("%w: volume %s: suspending %s took longer than the pause of %s (in-flight I/O did not drain; a failing leg?); they are resumed once the suspend returns",
			logapi.ErrFreezeFailed, uuid, devs, pause)
	case fv.suspendErr != nil:
		serr := fv.suspendErr
		f.releaseLocked(fv, "a suspend failed: "+serr.Error())
		f.mu.Unlock()
		f.log.Warn("freeze failed: resuming what was suspended", "uuid", uuid, "devices", devs, "err", serr)
		f.resume(fv)
		return logapi.Freeze{}, fmt.Errorf("%w: volume %s: %w", logapi.ErrFreezeFailed, uuid, serr)
	}
	fv.state = stateHeld
	fv.frozenAt = time.Now()
	fv.timer = time.AfterFunc(pause-fv.frozenAt.Sub(fv.start), func() { f.autoThaw(fv, pause) })
	out := logapi.Freeze{Token: fv.token, Devices: slices.Clone(devs), FrozenAt: fv.frozenAt}
	f.mu.Unlock()
	f.log.Debug("froze volume", "uuid", uuid, "token", fv.token, "devices", devs, "fsfreeze", fsfreeze,
		"suspend_took", fv.frozenAt.Sub(fv.start), "max_pause", pause)
	return out, nil
}

// suspendAll suspends fv's devices in order, stopping at the first
// failure or once fv is released, then closes fv.done.
func (f *freezer) suspendAll(dm dmtarget.DM, fv *frozen, opts dmtarget.SuspendOptions) {
	defer close(fv.done)
	for _, name := range fv.devices {
		f.mu.Lock()
		released := fv.state == stateReleased
		f.mu.Unlock()
		if released {
			return
		}
		err := dm.SuspendWith(context.Background(), name, opts)
		f.mu.Lock()
		if err != nil {
			fv.suspendErr = fmt.Errorf("suspend %s: %w", name, err)
		} else {
			fv.suspended = append(fv.suspended, name)
		}
		f.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Thaw implements logapi.Freezer.
func (f *freezer) Thaw(ctx context.Context, uuid string, token uint64) (bool, time.Duration, error) {
	f.mu.Lock()
	fv := f.vols[uuid]
	if fv == nil || fv.token != token || fv.state == stateFreezing {
		f.mu.Unlock()
		return false, 0, fmt.Errorf("%w: volume %s has no freeze with token %d (thawed already, or the token is from another freeze)",
			logapi.ErrFreezeToken, uuid, token)
	}
	delete(f.vols, uuid) // a token thaws once
	if fv.state == stateReleased {
		// Auto-thawed, or released when the replicator exited.
		why := fv.why
		f.mu.Unlock()
		select {
		case <-fv.resumed:
		case <-ctx.Done():
			return false, 0, fmt.Errorf("volume %s: waiting for the resume of %s: %w", uuid, fv.devices, ctx.Err())
		}
		f.mu.Lock()
		pause, rerr := fv.pause, fv.resumeErr
		f.mu.Unlock()
		f.log.Debug("thaw of a freeze already released", "uuid", uuid, "token", token, "devices", fv.devices, "why", why, "pause", pause)
		return false, pause, rerr
	}
	f.releaseLocked(fv, "thawed")
	f.mu.Unlock()
	dm, err := f.device()
	if err != nil { // cannot happen: the freeze opened it
		return false, 0, err
	}
	// Held only if nothing else resumed a device meanwhile.
	held := true
	for _, name := range fv.suspended {
		info, err := dm.Info(ctx, name)
		if err != nil || !info.Suspended {
			held = false
			f.log.Warn("a frozen device was resumed by someone else before the thaw", "uuid", uuid, "device", name, "err", err)
		}
	}
	f.resume(fv)
	f.mu.Lock()
	pause, rerr := fv.pause, fv.resumeErr
	f.mu.Unlock()
	f.log.Debug("thawed volume", "uuid", uuid, "token", token, "devices", fv.devices, "held", held, "pause", pause)
	return held, pause, rerr
}

// autoThaw resumes fv if it is still held when its pause is over.
func (f *freezer) autoThaw(fv *frozen, pause time.Duration) {
	f.mu.Lock()
	if fv.state != stateHeld {
		f.mu.Unlock()
		return
	}
	f.releaseLocked(fv, fmt.Sprintf("auto-thaw after %s", pause))
	f.mu.Unlock()
	f.log.Warn("auto-thaw: no Thaw came within the pause; resuming the devices", "uuid", fv.uuid, "token", fv.token, "devices", fv.devices, "max_pause", pause)
	f.resume(fv)
}

// releaseAll resumes every device still frozen (the replicator exited, or
// the log server stops). It waits up to resumeWait for suspends still
// running; those are resumed in the background once they return.
func (f *freezer) releaseAll(why string) {
	f.mu.Lock()
	var fvs []*frozen
	for _, fv := range f.vols {
		if fv.state != stateReleased {
			f.releaseLocked(fv, why)
			fvs = append(fvs, fv)
			f.log.Warn("resuming frozen devices: "+why, "uuid", fv.uuid, "token", fv.token, "devices", fv.devices)
		}
	}
	f.mu.Unlock()
	for _, fv := range fvs {
		f.resumeInBackground(fv)
	}
	t := time.NewTimer(resumeWait)
	defer t.Stop()
	for _, fv := range fvs {
		select {
		case <-fv.resumed:
		case <-t.C:
			f.log.Error("a suspend has not returned: its devices are resumed once it does", "uuid", fv.uuid, "devices", fv.devices, "waited", resumeWait)
			return
		}
	}
}

// close resumes everything and refuses new freezes (the log server stops).
func (f *freezer) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.releaseAll("the log server stops")
	// Resumes still waiting for a suspend to return (a Freeze that timed
	// out): the kernel is still served meanwhile.
	done := make(chan struct{})
	go func() {
		f.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(resumeWait):
		f.log.Error("stopping with a suspend that has not returned: its devices stay suspended until resumed (dmsetup resume)", "waited", resumeWait)
	}
}

// releaseLocked marks fv released; the caller resumes it. f.mu is held.
func (f *freezer) releaseLocked(fv *frozen, why string) {
	fv.state, fv.why = stateReleased, why
	if fv.timer != nil {
		fv.timer.Stop()
	}
}

func (f *freezer) resumeInBackground(fv *frozen) {
	f.bg.Add(1)
	go func() {
		defer f.bg.Done()
		f.resume(fv)
	}()
}

// resume waits for fv's suspends to return, then resumes every device
// that was suspended, in the reverse order. A resume that fails is tried
// again a few times: a device left suspended blocks the volume's writes.
func (f *freezer) resume(fv *frozen) {
	<-fv.done
	f.mu.Lock()
	names := slices.Clone(fv.suspended)
	dm := f.dm
	f.mu.Unlock()
	var errs []error
	for i := len(names) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 5; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err = dm.Resume(ctx, names[i])
			cancel()
			if err == nil || errors.Is(err, dmtarget.ErrNotFound) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			f.log.Error("cannot resume a frozen device: writes to it block until it is resumed (dmsetup resume "+names[i]+")",
				"uuid", fv.uuid, "device", names[i], "err", err)
			errs = append(errs, fmt.Errorf("resume %s: %w (run dmsetup resume %s)", names[i], err, names[i]))
		}
	}
	if len(errs) == 0 {
		f.forgetFreeze(fv)
	}
	f.mu.Lock()
	fv.pause = time.Since(fv.start)
	fv.resumeErr = errors.Join(errs...)
	f.mu.Unlock()
	close(fv.resumed)
}

// notSuspended fails if one of devs is suspended already: someone else
// (dmsetup suspend, a volume operation) holds it, and a Thaw would resume
// it under their feet.
func notSuspended(ctx context.Context, dm dmtarget.DM, uuid string, devs []string) error {
	for _, name := range devs {
		info, err := dm.Info(ctx, name)
		if err != nil {
			return fmt.Errorf("%w: volume %s: %w", logapi.ErrFreezeFailed, uuid, err)
		}
		if info.Suspended {
			return fmt.Errorf("%w: volume %s: device %s is suspended already (by dmsetup suspend or a volume operation): resume it (dmsetup resume %s) or wait for that operation",
				logapi.ErrFreezeFailed, uuid, name, name)
		}
	}
	return nil
}

// topDevices finds the mirror serving the log uuid and returns every dm
// device stacked on it, in suspend order: the topmost first, each device
// before every device it sits on.
func (f *freezer) topDevices(ctx context.Context, dm dmtarget.DM, uuid string) ([]string, error) {
	vols, err := dmtarget.ListUserspaceLogVolumes(ctx, dm)
	if err != nil {
		return nil, fmt.Errorf("%w: volume %s: %w", logapi.ErrFreezeFailed, uuid, err)
	}
	var mirror *dmtarget.LogVolume
	for i := range vols {
		if vols[i].LogUUID() == uuid {
			mirror = &vols[i]
			break
		}
	}
	if mirror == nil {
		return nil, fmt.Errorf("%w: volume %s: no dm mirror with this userspace log uuid is loaded (see dmsetup table)", logd.ErrUnknownVolume, uuid)
	}
	// depth: the longest path from the mirror up to each dm holder, so
	// that a device is suspended before everything below it.
	depth := map[string]int{}
	var walk func(kname string, d int) error
	walk = func(kname string, d int) error {
		if d > maxHolderDepth {
			return fmt.Errorf("%w: volume %s: more than %d levels of devices above mirror %s", logapi.ErrFreezeFailed, uuid, maxHolderDepth, mirror.Name)
		}
		hs, err := f.holders(kname)
		if err != nil {
			return fmt.Errorf("%w: volume %s: %w", logapi.ErrFreezeFailed, uuid, err)
		}
		for _, h := range hs {
			if h.Name == "" {
				// Not device-mapper (md, ...): it cannot be suspended
				// here; the dm device below it blocks its writes.
				continue
			}
			if depth[h.Name] < d+1 {
				depth[h.Name] = d + 1
				if err := walk(h.KName, d+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(dmtarget.KernelName(mirror.Minor), 0); err != nil {
		return nil, err
	}
	if len(depth) == 0 {
		return nil, fmt.Errorf("%w: volume %s: mirror %s has no device-mapper device on top: put dm-crypt or a linear device on top: consistency points need a device above the mirror, whose suspension leaves the mirror readable",
			logapi.ErrFreezeUnavailable, uuid, mirror.Name)
	}
	devs := make([]string, 0, len(depth))
	for n := range depth {
		devs = append(devs, n)
	}
	sort.Slice(devs, func(i, j int) bool {
		if depth[devs[i]] != depth[devs[j]] {
			return depth[devs[i]] > depth[devs[j]]
		}
		return devs[i] < devs[j]
	})
	return devs, nil
}
