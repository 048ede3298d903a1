package replicate

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// problems records what the receiver could not do, for the daemon's
// status: the receiver itself (e.g. the listen port taken) and receive
// images that cannot be opened. Each fails alone.
type problems struct {
	mu       sync.Mutex
	recv     error
	failures int
	images   map[string]error
	resets   map[string]reset // receives whose image changed (imageident.go)
}

// reset records that a receive's replica was dropped because its image
// changed. It is shown until the replica holds the whole volume again (a
// resync from the sender landed), the daemon restarts or the receive is
// removed: the sender does not know that the replica is empty.
type reset struct {
	why string
	at  time.Time
}

func (p *problems) reset(volume, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resets == nil {
		p.resets = map[string]reset{}
	}
	p.resets[volume] = reset{why: why, at: time.Now()}
}

// healed forgets the reset of volume: its replica is whole again.
func (p *problems) healed(volume string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.resets, volume)
}

// keepResets forgets the resets of volumes no longer received.
func (p *problems) keepResets(volumes []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	maps.DeleteFunc(p.resets, func(v string, _ reset) bool { return !slices.Contains(volumes, v) })
}

// receiverFailed records err and reports whether it is the same as last
// time (so it is logged once).
func (p *problems) receiverFailed(err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	same := p.recv != nil && p.recv.Error() == err.Error()
	p.recv = err
	p.failures++
	return same
}

func (p *problems) receiverOK() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recv, p.failures = nil, 0
}

// backoff is the wait before the receiver is tried again: 1 s doubling to
// 30 s.
func (p *problems) backoff() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := time.Second << min(p.failures-1, 5)
	return min(d, 30*time.Second)
}

func (p *problems) clearImages() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.images)
}

func (p *problems) image(volume string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.images == nil {
		p.images = map[string]error{}
	}
	p.images[volume] = err
}

// imageErr reports why the receive of volume is not served, or nil.
func (p *problems) imageErr(volume string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.images[volume]
}

// Problems lists, one line each, what the receiver cannot do right now.
func (m *Manager) Problems() []string {
	m.healResets()
	p := &m.probs
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	if p.recv != nil {
		out = append(out, p.recv.Error())
	}
	for _, v := range slices.Sorted(maps.Keys(p.images)) {
		out = append(out, fmt.Sprintf("receive %s: %v (fix the image or `dmsync receive` it again)", v, p.images[v]))
	}
	for _, v := range slices.Sorted(maps.Keys(p.resets)) {
		r := p.resets[v]
		out = append(out, fmt.Sprintf("receive %s: its replica was reset to empty at %s because %s: run `dmsync resync` of the volume on its sender to send it all again",
			v, r.at.UTC().Format(time.RFC3339), r.why))
	}
	return out
}

// healResets forgets the resets of replicas that hold the whole volume
// again: every byte was received since the reset (a resync landed).
func (m *Manager) healResets() {
	m.probs.mu.Lock()
	reset := slices.Collect(maps.Keys(m.probs.resets))
	m.probs.mu.Unlock()
	if len(reset) == 0 {
		return
	}
	for _, rs := range m.Receiving() {
		if !slices.Contains(reset, rs.Volume) || rs.Err != nil {
			continue
		}
		if r := rs.Root; r.VolumeSize > 0 && r.Covered >= r.VolumeSize && !r.Applying {
			m.probs.healed(rs.Volume)
			m.log.Info("replica whole again after its reset", "volume", rs.Volume)
		}
	}
}

func receiveNames(rs []Receive) []string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Volume
	}
	return names
}
