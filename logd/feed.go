package logd

import (
	"context"
	"sync"
)

// feed fans volume notifications out to Changes subscribers. Publishing
// never blocks: each subscriber keeps a set of volumes not yet delivered, so
// a slow reader sees notifications coalesced per volume.
type feed struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	mu    sync.Mutex
	queue []string
	set   map[string]struct{}
	wake  chan struct{}
}

func (f *feed) subscribe(ctx context.Context) <-chan string {
	s := &subscriber{set: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	f.mu.Lock()
	if f.subs == nil {
		f.subs = map[*subscriber]struct{}{}
	}
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	out := make(chan string)
	go func() {
		defer close(out)
		defer func() {
			f.mu.Lock()
			delete(f.subs, s)
			f.mu.Unlock()
		}()
		for {
			s.mu.Lock()
			var next string
			ok := len(s.queue) > 0
			if ok {
				next = s.queue[0]
				s.queue = s.queue[1:]
				delete(s.set, next)
			}
			s.mu.Unlock()
			if !ok {
				select {
				case <-s.wake:
					continue
				case <-ctx.Done():
					return
				}
			}
			select {
			case out <- next:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (f *feed) publish(uuid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		s.mu.Lock()
		if _, ok := s.set[uuid]; !ok {
			s.set[uuid] = struct{}{}
			s.queue = append(s.queue, uuid)
		}
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}
