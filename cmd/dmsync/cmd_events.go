package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dmsync/dmsync/internal/adminpb"
)

// eventsOptions are the flags of `dmsync events`.
type eventsOptions struct {
	Since uint64
	Now   bool
	JSON  bool
}

// AddFlags binds the options to fs.
func (o *eventsOptions) AddFlags(fs *pflag.FlagSet) {
	fs.Uint64Var(&o.Since, "since", 0, "replay the kept events after this seq (the first column) before the live ones")
	fs.BoolVar(&o.Now, "now", false, "replay no kept events: only what happens from now on")
	fs.BoolVar(&o.JSON, "json", false, "one JSON object per line (seq, time, kind, volume, message, gap)")
}

func newEventsCommand(g *globalOptions) *cobra.Command {
	var o eventsOptions
	c := &cobra.Command{
		Use:   "events",
		Short: "Follow dmsyncd's events: legs, peers, consistent points, verify, store",
		Long: `Print dmsyncd's events as they happen, one line each, until interrupted,
like drbdsetup events2: first the ones the daemon still keeps, then the
live ones. Kinds: leg-failed, leg-repair-started, leg-repaired, peer-up, peer-down,
consistent-point, verify-differences, store-failed.

Each line is SEQ TIME KIND [VOLUME] MESSAGE. A line "gap" means the daemon
dropped events this client was too slow to take; --since SEQ resumes after
the last one seen. dmsyncd also runs the executables in
/etc/dmsync/events.d on every event.`,
		Example: `  dmsync events
  dmsync events --now --json | jq -r 'select(.kind == "leg-failed") | .message'
  dmsync events --since 42`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Now && o.Since != 0 {
				return usageErr("events: give --since or --now, not both")
			}
			return runEvents(cmd.Context(), g, o, cmd.OutOrStdout())
		},
	}
	o.AddFlags(c.Flags())
	return c
}

// eventJSON is one line of `dmsync events --json`.
type eventJSON struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Volume  string    `json:"volume,omitempty"`
	Message string    `json:"message"`
	Gap     bool      `json:"gap,omitempty"`
}

func runEvents(ctx context.Context, g *globalOptions, o eventsOptions, stdout io.Writer) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := adminpb.NewEventsClient(c.Conn()).Events(ctx, &adminpb.EventsRequest{Since: o.Since, Now: o.Now})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	for {
		e, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted: the normal way to stop following
			}
			return err
		}
		t := time.Unix(0, e.GetTimeUnixNano()).UTC()
		if o.JSON {
			if err := enc.Encode(eventJSON{e.GetSeq(), t, e.GetKind(), e.GetVolume(), e.GetMessage(), e.GetGap()}); err != nil {
				return err
			}
			continue
		}
		if e.GetGap() {
			fmt.Fprintln(stdout, "gap: events before the next one were dropped (this client was too slow)")
		}
		vol := e.GetVolume()
		if vol == "" {
			vol = "-"
		}
		if _, err := fmt.Fprintf(stdout, "%d %s %s %s %s\n", e.GetSeq(), t.Format(time.RFC3339), e.GetKind(), vol, e.GetMessage()); err != nil {
			return err
		}
	}
}
