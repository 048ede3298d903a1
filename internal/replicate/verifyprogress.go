package replicate

import (
	"io"
	"sync"
	"sync/atomic"
)

// verifyProgress counts a running verify's work for `dmsync verify`'s
// progress bar: the bytes of its image the peer has hashed (the scrub,
// paced by the peer), then, with the index comparison, the bytes of the
// source read for that.
type verifyProgress struct {
	read     atomic.Uint64 // of the source, every pass
	scrubbed atomic.Uint64 // of the peer's image
	mark     atomic.Uint64 // read+1 when the whole-image scrub ended (0: not yet)
	size     uint64
	index    bool
}

// done returns the bytes of work done and to do.
func (p *verifyProgress) done() (done, total uint64) {
	done, total = min(p.scrubbed.Load(), p.size), p.size
	if p.index {
		total += p.size
		if m := p.mark.Load(); m > 0 {
			done += min(p.read.Load()-(m-1), p.size)
		}
	}
	return done, total
}

// verifies tracks the running verifies by volume.
type verifies struct {
	mu  sync.Mutex
	run map[string]*verifyProgress
}

// trackVerify returns src counting what it reads into volume's verify
// progress, the function to report the peer's scrub with, and a function
// that ends the tracking.
func (m *Manager) trackVerify(volume string, src io.ReaderAt, size uint64, index bool) (io.ReaderAt, func(uint64), func()) {
	p := &verifyProgress{size: size, index: index}
	onScrub := func(n uint64) {
		p.scrubbed.Store(n)
		if n >= size {
			p.mark.CompareAndSwap(0, p.read.Load()+1)
		}
	}
	m.verifies.mu.Lock()
	if m.verifies.run == nil {
		m.verifies.run = map[string]*verifyProgress{}
	}
	m.verifies.run[volume] = p
	m.verifies.mu.Unlock()
	return countingReaderAt{src, &p.read}, onScrub, func() {
		m.verifies.mu.Lock()
		if m.verifies.run[volume] == p {
			delete(m.verifies.run, volume)
		}
		m.verifies.mu.Unlock()
	}
}

// VerifyProgress reports the bytes a running verify of volume has
// compared (the peer's scrub, then the source's read for the index) and
// the bytes it will; ok is false when none runs.
func (m *Manager) VerifyProgress(volume string) (read, total uint64, ok bool) {
	m.verifies.mu.Lock()
	defer m.verifies.mu.Unlock()
	p, ok := m.verifies.run[volume]
	if !ok {
		return 0, 0, false
	}
	read, total = p.done()
	return read, total, true
}

type countingReaderAt struct {
	r io.ReaderAt
	n *atomic.Uint64
}

func (c countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(uint64(n))
	return n, err
}
