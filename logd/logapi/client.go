package logapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/dmsync/dmsync/logd"
	"github.com/dmsync/dmsync/logd/logpb"
)

// ErrUnreachable wraps a call the log server did not answer.
var ErrUnreachable = errors.New("logapi: log server unreachable")

// CallTimeout bounds each unary call (a Replicated waits for a sync).
const CallTimeout = time.Minute

// Client is logd.Replicator (and PendAll, PendRegions) over the local API.
type Client struct {
	conn *grpc.ClientConn
	pb   logpb.LogClient
	path string
}

var _ Log = (*Client)(nil)

// Dial returns a client of the log server listening on the unix socket
// path. It connects lazily; calls fail with ErrUnreachable while nothing
// answers.
func Dial(path string) (*Client, error) {
	conn, err := grpc.NewClient("passthrough:///logd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
	if err != nil {
		return nil, fmt.Errorf("log server socket %s: %w", path, err)
	}
	return &Client{conn: conn, pb: logpb.NewLogClient(conn), path: path}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// fromStatus maps a gRPC error back to logd's sentinels.
func (c *Client) fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var base error
	switch st.Code() {
	case codes.NotFound:
		base = logd.ErrUnknownVolume
	case codes.OutOfRange:
		base = logd.ErrRegionRange
	case codes.FailedPrecondition:
		base = logd.ErrStore
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("%w at %s: %s", ErrUnreachable, c.path, st.Message())
	default:
		return errors.New(st.Message())
	}
	return fmt.Errorf("%w (%s)", base, st.Message())
}

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), CallTimeout)
}

// Volumes lists the UUIDs of the logs known to the log server (none while
// it is unreachable).
func (c *Client) Volumes() []string {
	ctx, cancel := callCtx()
	defer cancel()
	r, err := c.pb.Volumes(ctx, &logpb.VolumesRequest{})
	if err != nil {
		return nil
	}
	return r.GetUuids()
}

// RegionSize implements logd.Replicator.
func (c *Client) RegionSize(uuid string) (uint64, uint64, error) {
	ctx, cancel := callCtx()
	defer cancel()
	r, err := c.pb.RegionSize(ctx, &logpb.VolumeRequest{Uuid: uuid})
	if err != nil {
		return 0, 0, c.fromStatus(err)
	}
	return r.GetSize(), r.GetCount(), nil
}

// Pending implements logd.Replicator.
func (c *Client) Pending(uuid string) ([]logd.PendingRegion, error) {
	ctx, cancel := callCtx()
	defer cancel()
	r, err := c.pb.Pending(ctx, &logpb.VolumeRequest{Uuid: uuid})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	if len(r.GetRegions()) != len(r.GetGens()) {
		return nil, fmt.Errorf("log server sent %d pending regions with %d generations", len(r.GetRegions()), len(r.GetGens()))
	}
	out := make([]logd.PendingRegion, len(r.GetRegions()))
	for i := range out {
		out[i] = logd.PendingRegion{Region: r.GetRegions()[i], Gen: r.GetGens()[i]}
	}
	return out, nil
}

// Quiet implements logd.Replicator.
func (c *Client) Quiet(uuid string, region uint64) (bool, error) {
	ctx, cancel := callCtx()
	defer cancel()
	r, err := c.pb.Quiet(ctx, &logpb.QuietRequest{Uuid: uuid, Region: region})
	if err != nil {
		return false, c.fromStatus(err)
	}
	return r.GetQuiet(), nil
}

// Replicated implements logd.Replicator. An error means no region of the
// batch may be counted as replicated, even if the log server removed some
// (they are then sent again: the safe side).
func (c *Client) Replicated(uuid string, regions []logd.PendingRegion) (int, error) {
	if ReplicatedHook != nil {
		ReplicatedHook(uuid)
	}
	req := &logpb.ReplicatedRequest{Uuid: uuid, Regions: make([]uint64, len(regions)), Gens: make([]uint64, len(regions))}
	for i, p := range regions {
		req.Regions[i], req.Gens[i] = p.Region, p.Gen
	}
	ctx, cancel := callCtx()
	defer cancel()
	r, err := c.pb.Replicated(ctx, req)
	if err != nil {
		return 0, c.fromStatus(err)
	}
	return int(r.GetRemoved()), nil
}

// ReplicatedHook, if set, runs at the start of every Replicated call. It
// exists for fault tests (cmd/dmsyncd sets it only when asked to by its
// test environment variable).
var ReplicatedHook func(uuid string)

// PendAll makes every region of the volume pending (see logd.Server.PendAll).
func (c *Client) PendAll(uuid string) error {
	ctx, cancel := callCtx()
	defer cancel()
	_, err := c.pb.PendAll(ctx, &logpb.VolumeRequest{Uuid: uuid})
	return c.fromStatus(err)
}

// PendRegions makes the given regions of the volume pending (see
// logd.Server.PendRegions).
func (c *Client) PendRegions(uuid string, regions []uint64) error {
	ctx, cancel := callCtx()
	defer cancel()
	_, err := c.pb.PendRegions(ctx, &logpb.PendRegionsRequest{Uuid: uuid, Regions: regions})
	return c.fromStatus(err)
}

// Stats returns the log server's counters; if they cannot be fetched, the
// zero Stats with StoreError naming why (metrics show the log server as
// unreadable rather than healthy).
func (c *Client) Stats() logd.Stats {
	ctx, cancel := callCtx()
	defer cancel()
	r, err := c.pb.Stats(ctx, &logpb.StatsRequest{})
	if err == nil {
		var st logd.Stats
		if err = json.Unmarshal(r.GetJson(), &st); err == nil {
			return st
		}
	}
	return logd.Stats{StoreError: "log server stats: " + c.fromStatus(err).Error()}
}

// Report sends the replicator's problems to the log server.
func (c *Client) Report(ctx context.Context, r *logpb.ReportRequest) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.pb.Report(ctx, r)
	return c.fromStatus(err)
}

// Health asks the log server for the daemon's health.
func (c *Client) Health(ctx context.Context) (*logpb.HealthResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := c.pb.Health(ctx, &logpb.HealthRequest{})
	return r, c.fromStatus(err)
}

// Changes implements logd.Replicator. The stream is re-opened when it
// breaks; after each (re)connection every volume is announced once, since
// notifications may have been missed meanwhile.
func (c *Client) Changes(ctx context.Context) <-chan string {
	out := make(chan string)
	go func() {
		defer close(out)
		send := func(u string) bool {
			select {
			case out <- u:
				return true
			case <-ctx.Done():
				return false
			}
		}
		delay := 100 * time.Millisecond
		for ctx.Err() == nil {
			stream, err := c.pb.Changes(ctx, &logpb.ChangesRequest{}, grpc.WaitForReady(true))
			if err == nil {
				// The stream is open on the server once its headers come.
				if _, err = stream.Header(); err == nil {
					delay = 100 * time.Millisecond
					for _, u := range c.Volumes() {
						if !send(u) {
							return
						}
					}
					for {
						var m *logpb.ChangesResponse
						if m, err = stream.Recv(); err != nil {
							break
						}
						if !send(m.GetUuid()) {
							return
						}
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 2*time.Second)
		}
	}()
	return out
}
