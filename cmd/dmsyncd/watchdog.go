package main

import (
	"sync"
	"time"

	"github.com/dmsync/dmsync/internal/sdnotify"
)

// watchdogPinger returns the log loop's heartbeat: WATCHDOG=1 at most every
// interval/3. It is called only by the log server's tick loop, after it
// took the core's lock and handled the tick, so a log loop that hangs (a
// deadlock, a store that does not return) stops the pings and systemd
// restarts the daemon. No separate ticker pings regardless.
func watchdogPinger(interval time.Duration) func() {
	var mu sync.Mutex
	var last time.Time
	socket := sdnotify.Socket()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if now := time.Now(); now.Sub(last) >= interval/3 {
			last = now
			_, _ = sdnotify.Watchdog(socket)
		}
	}
}
