// Package dmtargettest provides a fake device-mapper (dmtarget.DM) that
// records every call, lets tests inject failures at any step, and keeps
// enough state (devices, live and inactive tables, suspension, events) to
// check that a failed operation left nothing behind.
package dmtargettest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/dmsync/dmsync/dmtarget"
)

// Device is the fake's state of one dm device.
type Device struct {
	Name      string
	UUID      string
	Minor     uint32
	Live      []dmtarget.Target
	Inactive  []dmtarget.Target
	Suspended bool
	OpenCount int32
	EventNr   uint32
	// Status overrides the status text per target; nil means the fake
	// derives it (mirror: all legs alive, fully in sync, core log).
	Status []string
}

// Fake is an in-memory dmtarget.DM. The zero value is not usable: call New.
type Fake struct {
	mu      sync.Mutex
	devices map[string]*Device
	next    uint32
	calls   []string
	fail    map[string]error
	changed chan struct{}
}

var _ dmtarget.DM = (*Fake)(nil)

// Major is the device major number the fake assigns.
const Major = 253

// New returns an empty fake.
func New() *Fake {
	return &Fake{devices: map[string]*Device{}, fail: map[string]error{}, changed: make(chan struct{})}
}

// FailOn makes the next call whose record equals key fail with err. Keys
// are "op name", e.g. "create vol0", "load vol0-sink", "resume vol0".
func (f *Fake) FailOn(key string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[key] = err
}

// Calls returns the recorded calls, e.g. ["create vol0 DMSYNC-x", ...].
// Load records the table as "load NAME: <line>; <line>".
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Devices returns the names of the existing devices, sorted.
func (f *Fake) Devices() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ns []string
	for n := range f.devices {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Device returns a copy of a device's state.
func (f *Fake) Device(name string) (Device, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[name]
	if !ok {
		return Device{}, false
	}
	return *d, true
}

// Update changes a device's state under the lock (e.g. to set OpenCount
// or Status) and, if bump, raises its event number and wakes waiters.
func (f *Fake) Update(name string, bump bool, fn func(*Device)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[name]
	if !ok {
		return fmt.Errorf("fake: no device %s", name)
	}
	fn(d)
	if bump {
		d.EventNr++
		close(f.changed)
		f.changed = make(chan struct{})
	}
	return nil
}

// record logs a call and returns an injected failure for it, if any.
func (f *Fake) record(op, name string, extra ...string) error {
	key := strings.TrimSpace(op + " " + name)
	f.calls = append(f.calls, strings.TrimSpace(key+" "+strings.Join(extra, " ")))
	if err, ok := f.fail[key]; ok {
		delete(f.fail, key)
		return fmt.Errorf("fake %s: %w", key, err)
	}
	return nil
}

func (f *Fake) lookup(op, name string) (*Device, error) {
	d, ok := f.devices[name]
	if !ok {
		return nil, fmt.Errorf("%s %s: %w", op, name, dmtarget.ErrNotFound)
	}
	return d, nil
}

func info(d *Device) dmtarget.Info {
	return dmtarget.Info{
		Name: d.Name, UUID: d.UUID, Major: Major, Minor: d.Minor,
		OpenCount: d.OpenCount, TargetCount: uint32(len(d.Live)), EventNr: d.EventNr,
		Suspended: d.Suspended, ActivePresent: d.Live != nil, InactivePresent: d.Inactive != nil,
	}
}

// Version implements dmtarget.DM.
func (f *Fake) Version(ctx context.Context) (dmtarget.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("version", ""); err != nil {
		return dmtarget.Version{}, err
	}
	return dmtarget.Version{4, 47, 0}, nil
}

// Create implements dmtarget.DM.
func (f *Fake) Create(ctx context.Context, name, uuid string) (dmtarget.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("create", name, uuid); err != nil {
		return dmtarget.Info{}, err
	}
	if _, ok := f.devices[name]; ok {
		return dmtarget.Info{}, fmt.Errorf("create %s: %w", name, dmtarget.ErrExists)
	}
	if uuid != "" {
		for _, d := range f.devices {
			if d.UUID == uuid {
				return dmtarget.Info{}, fmt.Errorf("create %s: uuid %s: %w", name, uuid, dmtarget.ErrExists)
			}
		}
	}
	d := &Device{Name: name, UUID: uuid, Minor: f.next, Suspended: true}
	f.next++
	f.devices[name] = d
	return info(d), nil
}

// Load implements dmtarget.DM.
func (f *Fake) Load(ctx context.Context, name string, table []dmtarget.Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	lines := make([]string, len(table))
	for i, t := range table {
		lines[i] = t.String()
	}
	if err := f.record("load", name, ": "+strings.Join(lines, "; ")); err != nil {
		return err
	}
	d, err := f.lookup("load", name)
	if err != nil {
		return err
	}
	if len(table) == 0 {
		return fmt.Errorf("load %s: empty table", name)
	}
	d.Inactive = append([]dmtarget.Target{}, table...)
	return nil
}

// Suspend implements dmtarget.DM.
func (f *Fake) Suspend(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("suspend", name); err != nil {
		return err
	}
	d, err := f.lookup("suspend", name)
	if err != nil {
		return err
	}
	d.Suspended = true
	return nil
}

// SuspendWith implements dmtarget.DM. It records "suspend NAME noflush
// nolockfs" with the options given; failures are injected on "suspend NAME".
func (f *Fake) SuspendWith(ctx context.Context, name string, o dmtarget.SuspendOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var opts []string
	if o.NoFlush {
		opts = append(opts, "noflush")
	}
	if o.NoLockFS {
		opts = append(opts, "nolockfs")
	}
	if err := f.record("suspend", name, opts...); err != nil {
		return err
	}
	d, err := f.lookup("suspend", name)
	if err != nil {
		return err
	}
	d.Suspended = true
	return nil
}

// Resume implements dmtarget.DM.
func (f *Fake) Resume(ctx context.Context, name string) (dmtarget.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("resume", name); err != nil {
		return dmtarget.Info{}, err
	}
	d, err := f.lookup("resume", name)
	if err != nil {
		return dmtarget.Info{}, err
	}
	if d.Inactive != nil {
		// Like the kernel: a table swap is no target event, the event
		// number stays (Update with bump raises one).
		d.Live, d.Inactive, d.Status = d.Inactive, nil, nil
	}
	d.Suspended = false
	return info(d), nil
}

// Remove implements dmtarget.DM.
func (f *Fake) Remove(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("remove", name); err != nil {
		return err
	}
	d, err := f.lookup("remove", name)
	if err != nil {
		return err
	}
	if d.OpenCount > 0 {
		return fmt.Errorf("remove %s: %w", name, dmtarget.ErrBusy)
	}
	for _, o := range f.devices {
		for _, t := range o.Live {
			if o != d && strings.Contains(" "+t.Params+" ", fmt.Sprintf(" %d:%d ", Major, d.Minor)) {
				return fmt.Errorf("remove %s: used by %s: %w", name, o.Name, dmtarget.ErrBusy)
			}
		}
	}
	delete(f.devices, name)
	return nil
}

// Info implements dmtarget.DM.
func (f *Fake) Info(ctx context.Context, name string) (dmtarget.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("info", name); err != nil {
		return dmtarget.Info{}, err
	}
	d, err := f.lookup("info", name)
	if err != nil {
		return dmtarget.Info{}, err
	}
	return info(d), nil
}

// Table implements dmtarget.DM.
func (f *Fake) Table(ctx context.Context, name string) (dmtarget.Info, []dmtarget.Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("table", name); err != nil {
		return dmtarget.Info{}, nil, err
	}
	d, err := f.lookup("table", name)
	if err != nil {
		return dmtarget.Info{}, nil, err
	}
	return info(d), append([]dmtarget.Target(nil), d.Live...), nil
}

// Status implements dmtarget.DM.
func (f *Fake) Status(ctx context.Context, name string) (dmtarget.Info, []dmtarget.Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("status", name); err != nil {
		return dmtarget.Info{}, nil, err
	}
	d, err := f.lookup("status", name)
	if err != nil {
		return dmtarget.Info{}, nil, err
	}
	return info(d), status(d), nil
}

func status(d *Device) []dmtarget.Target {
	out := make([]dmtarget.Target, len(d.Live))
	for i, t := range d.Live {
		s := t
		s.Params = ""
		switch {
		case i < len(d.Status):
			s.Params = d.Status[i]
		case t.Type == "mirror":
			s.Params = mirrorStatus(t)
		}
		out[i] = s
	}
	return out
}

// mirrorStatus derives a healthy, in-sync status from a mirror table.
func mirrorStatus(t dmtarget.Target) string {
	mt, err := dmtarget.ParseMirrorTable(t.Params)
	if err != nil || mt.RegionSectors == 0 {
		return ""
	}
	regions := (t.Length + mt.RegionSectors - 1) / mt.RegionSectors
	devs := make([]string, len(mt.Legs))
	for i, l := range mt.Legs {
		devs[i] = l.Dev
	}
	log := "1 core"
	if mt.LogType == "userspace" {
		log = "3 userspace " + mt.UUID + " A"
	}
	return fmt.Sprintf("%d %s %d/%d 1 %s %s", len(devs), strings.Join(devs, " "), regions, regions, strings.Repeat("A", len(devs)), log)
}

// List implements dmtarget.DM.
func (f *Fake) List(ctx context.Context) ([]dmtarget.DeviceName, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("list", ""); err != nil {
		return nil, err
	}
	var out []dmtarget.DeviceName
	for _, d := range f.devices {
		out = append(out, dmtarget.DeviceName{Name: d.Name, UUID: d.UUID, Major: Major, Minor: d.Minor, EventNr: d.EventNr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Wait implements dmtarget.DM: it returns once the device's event number
// differs from eventNr (see Update), or ctx is done.
func (f *Fake) Wait(ctx context.Context, name string, eventNr uint32) (dmtarget.Info, []dmtarget.Target, error) {
	f.mu.Lock()
	if err := f.record("wait", name, fmt.Sprint(eventNr)); err != nil {
		f.mu.Unlock()
		return dmtarget.Info{}, nil, err
	}
	for {
		d, err := f.lookup("wait", name)
		if err != nil {
			f.mu.Unlock()
			return dmtarget.Info{}, nil, err
		}
		if d.EventNr != eventNr {
			i, st := info(d), status(d)
			f.mu.Unlock()
			return i, st, nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return dmtarget.Info{}, nil, fmt.Errorf("wait %s: %w", name, ctx.Err())
		case <-ch:
		}
		f.mu.Lock()
	}
}

// Message implements dmtarget.DM. The fake accepts any message and
// replies with nothing.
func (f *Fake) Message(ctx context.Context, name string, sector uint64, msg string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("message", name, fmt.Sprint(sector), msg); err != nil {
		return "", err
	}
	if _, err := f.lookup("message", name); err != nil {
		return "", err
	}
	return "", nil
}
