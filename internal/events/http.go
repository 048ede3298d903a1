package events

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// SSEHandler streams the hub's events as Server-Sent Events, one JSON
// event per message with its Seq as the id, so `curl -N HOST/events`
// follows them and a browser's EventSource resumes after a reconnect
// (Last-Event-ID). ?since=N replays the kept events after N; without it
// the stream starts with the latest 20.
func SSEHandler(hub *Hub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fl, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "streaming not supported", http.StatusInternalServerError)
			return
		}
		since := r.URL.Query().Get("since")
		if since == "" {
			since = r.Header.Get("Last-Event-ID")
		}
		var from uint64
		if since != "" {
			n, err := strconv.ParseUint(since, 10, 64)
			if err != nil {
				http.Error(w, fmt.Sprintf("since=%q: want an event number", since), http.StatusBadRequest)
				return
			}
			from = n
		} else if last := hub.Last(); last > 20 {
			from = last - 20
		}
		sub := hub.Subscribe(from)
		defer sub.Close()
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		send := func(e Event) bool {
			js, _ := json.Marshal(e)
			_, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Kind, js)
			return err == nil
		}
		if sub.Missed && since != "" {
			fmt.Fprintf(w, ": some events after %s are no longer kept\n\n", since)
		}
		var last uint64
		for _, e := range sub.Replay {
			if e.Seq > last && !send(e) {
				return
			}
			last = max(last, e.Seq)
		}
		fl.Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case e, ok := <-sub.C:
				if !ok {
					fmt.Fprintf(w, ": fell behind; reconnect with ?since=%d\n\n", last)
					return
				}
				if e.Seq <= last {
					continue
				}
				if !send(e) {
					return
				}
				last = e.Seq
				fl.Flush()
			}
		}
	})
}
