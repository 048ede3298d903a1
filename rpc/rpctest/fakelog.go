// Package rpctest holds test doubles for package rpc: FakeLog, an
// in-memory dirty log implementing logd.Replicator (held to logd.Server's
// behaviour by a conformance suite run against both), and Transport, an
// in-memory rpc.Transport into an rpc.Receiver for deterministic sender
// tests.
package rpctest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/dmsync/dmsync/logd"
)

// FakeLog is an in-memory logd.Replicator for one or more volumes. Write
// and Mark/Clear model the kernel's MARK and CLEAR: a MARK bumps a region's
// generation and makes it pending and busy until CLEAR.
type FakeLog struct {
	mu   sync.Mutex
	vols map[string]*fakeVol
	subs []chan string
	// OnReplicated, if set, is called (without the lock) before a
	// Replicated call takes effect; an error fails the call.
	OnReplicated func(uuid string, region, gen uint64) error
}

type fakeVol struct {
	regionSize, count uint64
	gen               map[uint64]uint64
	pending           map[uint64]bool
	busy              map[uint64]int
	replicated        map[uint64]int
}

// NewFakeLog returns an empty log.
func NewFakeLog() *FakeLog { return &FakeLog{vols: map[string]*fakeVol{}} }

// AddVolume adds a volume whose regions are all pending (a newly adopted
// volume).
func (f *FakeLog) AddVolume(uuid string, regionSize, count uint64) {
	f.mu.Lock()
	v := &fakeVol{regionSize: regionSize, count: count, gen: map[uint64]uint64{}, pending: map[uint64]bool{}, busy: map[uint64]int{}, replicated: map[uint64]int{}}
	for r := uint64(0); r < count; r++ {
		v.pending[r] = true
		v.gen[r] = 1
	}
	f.vols[uuid] = v
	f.mu.Unlock()
	f.notify(uuid)
}

func (f *FakeLog) vol(uuid string) (*fakeVol, error) {
	v, ok := f.vols[uuid]
	if !ok {
		return nil, fmt.Errorf("fake log: no volume %q", uuid)
	}
	return v, nil
}

// Mark records a MARK of region: its generation goes up and it is pending
// and busy until Clear.
func (f *FakeLog) Mark(uuid string, region uint64) {
	f.mu.Lock()
	v := f.vols[uuid]
	v.gen[region]++
	v.pending[region] = true
	v.busy[region]++
	f.mu.Unlock()
	f.notify(uuid)
}

// Clear records a CLEAR: the region is no longer busy but stays pending.
func (f *FakeLog) Clear(uuid string, region uint64) {
	f.mu.Lock()
	v := f.vols[uuid]
	if v.busy[region] > 0 {
		v.busy[region]--
	}
	f.mu.Unlock()
	f.notify(uuid)
}

// Write is Mark followed by Clear: a completed write to region.
func (f *FakeLog) Write(uuid string, region uint64) {
	f.Mark(uuid, region)
	f.Clear(uuid, region)
}

// ReplicatedCount returns how often region was successfully replicated.
func (f *FakeLog) ReplicatedCount(uuid string, region uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.vols[uuid].replicated[region]
}

func (f *FakeLog) notify(uuid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.subs {
		select {
		case c <- uuid:
		default:
		}
	}
}

// Volumes implements logd.Replicator.
func (f *FakeLog) Volumes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for u := range f.vols {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// RegionSize implements logd.Replicator.
func (f *FakeLog) RegionSize(uuid string) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.vol(uuid)
	if err != nil {
		return 0, 0, err
	}
	return v.regionSize, v.count, nil
}

// Pending implements logd.Replicator.
func (f *FakeLog) Pending(uuid string) ([]logd.PendingRegion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.vol(uuid)
	if err != nil {
		return nil, err
	}
	var out []logd.PendingRegion
	for r := range v.pending {
		out = append(out, logd.PendingRegion{Region: r, Gen: v.gen[r]})
	}
	slices.SortFunc(out, func(a, b logd.PendingRegion) int { return int(a.Region) - int(b.Region) })
	return out, nil
}

// Quiet implements logd.Replicator.
func (f *FakeLog) Quiet(uuid string, region uint64) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.vol(uuid)
	if err != nil {
		return false, err
	}
	return v.busy[region] == 0, nil
}

// Replicated implements logd.Replicator. OnReplicated, if set, is called
// for each region first; its error fails the whole call. The conformance
// suite (conformance_test.go) holds it to logd.Server's behaviour.
func (f *FakeLog) Replicated(uuid string, regions []logd.PendingRegion) (int, error) {
	if f.OnReplicated != nil {
		for _, p := range regions {
			if err := f.OnReplicated(uuid, p.Region, p.Gen); err != nil {
				return 0, err
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.vol(uuid)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range regions {
		// Like logd.Server: a region written since gen, or with a write
		// still in flight, stays pending.
		if !v.pending[p.Region] || v.gen[p.Region] != p.Gen || v.busy[p.Region] > 0 {
			continue
		}
		delete(v.pending, p.Region)
		v.replicated[p.Region]++
		n++
	}
	return n, nil
}

// Changes implements logd.Replicator.
func (f *FakeLog) Changes(ctx context.Context) <-chan string {
	c := make(chan string, 16)
	f.mu.Lock()
	f.subs = append(f.subs, c)
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, s := range f.subs {
			if s == c {
				f.subs = append(f.subs[:i], f.subs[i+1:]...)
				break
			}
		}
		close(c)
	}()
	return c
}

var _ logd.Replicator = (*FakeLog)(nil)
