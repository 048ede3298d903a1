package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/dmsync/dmsync/dmtarget"
)

// progress shows how far a long command (wait, replicate --wait, verify)
// got: on a terminal one live line with a bar, %, rate and ETA, redrawn in
// place; otherwise (a pipe, a log, systemd) a plain line every interval.
type progress struct {
	w        io.Writer
	tty      bool
	width    int
	interval time.Duration // between plain lines
	now      func() time.Time
	lastLine time.Time
	drawn    bool // a live line is on the screen
}

// isTerminal is how progress tells a terminal from anything else (tests
// replace it).
var isTerminal = func(w io.Writer) (bool, int) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil || width <= 0 {
		width = 80
	}
	return true, width
}

// plainInterval is the time between plain progress lines.
var plainInterval = 10 * time.Second

func newProgress(w io.Writer) *progress {
	tty, width := isTerminal(w)
	return &progress{w: w, tty: tty, width: width, interval: plainInterval, now: time.Now}
}

// pollEvery is how often the caller should ask for news.
func (p *progress) pollEvery() time.Duration {
	if p.tty {
		return time.Second
	}
	return p.interval
}

// update shows done of total bytes at rate bytes/s; eta < 0 is unknown.
// what names the work ("data: replicating"), note is the state.
func (p *progress) update(what string, done, total uint64, rate float64, eta time.Duration, note string) {
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(min(done, total)) / float64(total)
	}
	stats := fmt.Sprintf("%5.1f%%  %s/%s", pct, dmtarget.FormatSize(done), dmtarget.FormatSize(total))
	if rate > 0 {
		stats += "  " + formatRate(rate)
	}
	if eta >= time.Second && done < total {
		stats += "  ETA " + eta.Round(time.Second).String()
	}
	if !p.tty {
		now := p.now()
		if !p.lastLine.IsZero() && now.Sub(p.lastLine) < p.interval {
			return
		}
		p.lastLine = now
		line := what + ": " + stats
		if note != "" {
			line += " (" + note + ")"
		}
		fmt.Fprintln(p.w, line)
		return
	}
	barWidth := max(10, min(40, p.width-len(what)-len(stats)-8))
	fill := int(pct / 100 * float64(barWidth))
	bar := strings.Repeat("=", fill)
	if fill < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-fill-1)
	}
	line := fmt.Sprintf("%s [%s] %s", what, bar, stats)
	if note != "" && len(line)+len(note)+3 <= p.width {
		line += "  " + note
	}
	if len(line) > p.width && p.width > 0 {
		line = line[:p.width]
	}
	fmt.Fprintf(p.w, "\r%s\x1b[K", line)
	p.drawn = true
}

// done ends the live line (if any) and prints msg.
func (p *progress) done(msg string) {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
	if msg != "" {
		fmt.Fprintln(p.w, msg)
	}
}

// rateMeter smooths a byte counter into a rate.
type rateMeter struct {
	last  uint64
	at    time.Time
	rate  float64
	start bool
}

func (r *rateMeter) add(n uint64, now time.Time) float64 {
	if r.start && now.After(r.at) && n >= r.last {
		cur := float64(n-r.last) / now.Sub(r.at).Seconds()
		if r.rate == 0 {
			r.rate = cur
		} else {
			r.rate = 0.7*r.rate + 0.3*cur
		}
	}
	r.last, r.at, r.start = n, now, true
	return r.rate
}

// formatRate prints bytes per second with three significant digits.
func formatRate(r float64) string {
	units := []string{"B", "K", "M", "G", "T"}
	i := 0
	for r >= 1000 && i < len(units)-1 {
		r /= 1024
		i++
	}
	switch {
	case r >= 100 || i == 0:
		return fmt.Sprintf("%.0f%s/s", r, units[i])
	case r >= 10:
		return fmt.Sprintf("%.1f%s/s", r, units[i])
	}
	return fmt.Sprintf("%.2f%s/s", r, units[i])
}
