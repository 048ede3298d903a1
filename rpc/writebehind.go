package rpc

import (
	"sync"
)

// writeDepth is how many of a batch's image writes may be in flight at
// once. With one at a time, a batch's stream verified and wrote turn
// about, and a write that waits (pages the kernel must find, writeback
// throttling, a device under O_DIRECT) held up the stream.
const writeDepth = 4

// writeBehind runs a batch's in-place image writes on their own
// goroutines, up to writeDepth at once, so that verifying the next run
// overlaps writing the last. The zero value is ready. A write's data
// must not change until wait returns.
type writeBehind struct {
	once sync.Once
	sem  chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
}

// write starts writing data at off; it returns the error of an earlier
// write, if one failed, and then starts nothing. wrap gives a failed
// write's error its context.
func (w *writeBehind) write(img Image, data []byte, off uint64, wrap func(error) error) error {
	w.once.Do(func() { w.sem = make(chan struct{}, writeDepth) })
	if err := w.failed(); err != nil {
		return err
	}
	w.sem <- struct{}{}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { <-w.sem }()
		_, err := img.WriteAt(data, int64(off))
		if err == nil {
			err = startWriteback(img, off, len(data))
		}
		if err != nil {
			w.mu.Lock()
			if w.err == nil {
				w.err = wrap(err)
			}
			w.mu.Unlock()
		}
	}()
	return nil
}

func (w *writeBehind) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// wait returns once no write is in flight, with the first write's error.
func (w *writeBehind) wait() error {
	w.wg.Wait()
	return w.failed()
}
