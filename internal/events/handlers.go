package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// DefaultHandlerDir is where dmsyncd looks for event handlers.
const DefaultHandlerDir = "/etc/dmsync/events.d"

// DefaultHandlerTimeout bounds one handler run.
const DefaultHandlerTimeout = 30 * time.Second

// handlerName is which files of the directory run, as with run-parts:
// letters, digits, '_' and '-' only, so editor backups and dpkg leftovers
// (foo~, foo.dpkg-old) never do.
var handlerName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Handlers runs the executables of a directory on each event, one at a
// time, in name order. Each gets the event as environment variables
// (DMSYNC_EVENT_SEQ, _TIME, _KIND, _VOLUME, _MESSAGE) and as one JSON
// object on stdin, and is killed after Timeout. A handler's failure is
// logged and nothing else: handlers run on their own goroutine, never on
// the daemon's, and a handler too slow to keep up loses events (logged
// with how many).
type Handlers struct {
	Dir     string
	Timeout time.Duration
	Logger  *slog.Logger
	// Since is the Seq after which Run starts handling (0: every event
	// the hub still keeps, so a new hub's first events are not missed).
	Since uint64
}

// Run runs handlers for the hub's events until ctx is done.
func (h Handlers) Run(ctx context.Context, hub *Hub) {
	if h.Timeout <= 0 {
		h.Timeout = DefaultHandlerTimeout
	}
	if h.Logger == nil {
		h.Logger = slog.New(slog.DiscardHandler)
	}
	sub := hub.Subscribe(h.Since)
	last := h.Since
	for _, e := range sub.Replay {
		h.handle(ctx, e)
		last = e.Seq
	}
	for {
		select {
		case <-ctx.Done():
			sub.Close()
			return
		case e, ok := <-sub.C:
			if !ok {
				// Fell behind: pick up what the ring still has.
				sub = hub.Subscribe(last)
				if sub.Missed {
					h.Logger.Warn("event handlers fell behind; some events were not handled", "dir", h.Dir, "after_seq", last)
				}
				for _, e := range sub.Replay {
					h.handle(ctx, e)
					last = e.Seq
				}
				continue
			}
			h.handle(ctx, e)
			last = e.Seq
		}
	}
}

// handle runs every handler for one event.
func (h Handlers) handle(ctx context.Context, e Event) {
	paths, err := h.list()
	if err != nil {
		h.Logger.Warn("cannot list event handlers", "dir", h.Dir, "err", err)
		return
	}
	for _, p := range paths {
		out, err := RunHandler(ctx, p, e, h.Timeout)
		if err != nil {
			h.Logger.Warn("event handler failed", "handler", p, "kind", e.Kind, "seq", e.Seq, "err", err, "output", out)
		} else {
			h.Logger.Debug("event handler ran", "handler", p, "kind", e.Kind, "seq", e.Seq)
		}
	}
}

// list returns the handlers to run, in name order; none if the directory
// does not exist.
func (h Handlers) list() ([]string, error) {
	ents, err := os.ReadDir(h.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range ents {
		if !handlerName.MatchString(d.Name()) {
			continue
		}
		p := filepath.Join(h.Dir, d.Name())
		fi, err := os.Stat(p) // follows symlinks
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// maxOutput bounds what is kept of a handler's output for the log.
const maxOutput = 4 << 10

// RunHandler runs one handler for e, killing it after timeout, and returns
// the start of its combined output.
func RunHandler(ctx context.Context, path string, e Event, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	js, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = append(os.Environ(),
		"DMSYNC_EVENT_SEQ="+strconv.FormatUint(e.Seq, 10),
		"DMSYNC_EVENT_TIME="+e.Time.UTC().Format(time.RFC3339Nano),
		"DMSYNC_EVENT_KIND="+string(e.Kind),
		"DMSYNC_EVENT_VOLUME="+e.Volume,
		"DMSYNC_EVENT_MESSAGE="+e.Message,
	)
	cmd.Stdin = bytes.NewReader(append(js, '\n'))
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second // a handler's children holding the pipes open
	err = cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("killed after %v: %w", timeout, err)
	}
	return out.String(), err
}

// limitedBuffer keeps the first maxOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
