package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dmsync/dmsync/dmtarget"
	"github.com/dmsync/dmsync/internal/adminpb"
)

// Client is an admin API client. Its methods return errors that wrap
// dmtarget's sentinels (see FromStatus).
type Client struct {
	conn   *grpc.ClientConn
	pb     adminpb.AdminClient
	socket string
}

// Dial connects to dmsyncd's admin socket. A missing socket gives
// dmtarget.ErrDaemonNotRunning with the path and the fix.
func Dial(ctx context.Context, socket string) (*Client, error) {
	if _, err := os.Stat(socket); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, dmtarget.DaemonNotRunning(socket)
		}
		return nil, fmt.Errorf("admin socket %s: %w (the CLI must run as root)", socket, err)
	}
	conn, err := grpc.NewClient("passthrough:///dmsyncd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		return nil, fmt.Errorf("dial dmsyncd at %s: %w", socket, err)
	}
	return &Client{conn: conn, pb: adminpb.NewAdminClient(conn), socket: socket}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// VolumeCreate creates (or with dryRun only plans) a volume.
func (c *Client) VolumeCreate(ctx context.Context, spec *adminpb.VolumeSpec, dryRun bool) (*adminpb.VolumeCreateResponse, error) {
	r, err := c.pb.VolumeCreate(ctx, &adminpb.VolumeCreateRequest{Spec: spec, DryRun: dryRun})
	return r, FromStatus(err, c.socket)
}

// VolumeRemove removes a volume.
func (c *Client) VolumeRemove(ctx context.Context, name string) (*adminpb.VolumeRemoveResponse, error) {
	r, err := c.pb.VolumeRemove(ctx, &adminpb.VolumeRemoveRequest{Name: name})
	return r, FromStatus(err, c.socket)
}

// VolumeList lists volumes.
func (c *Client) VolumeList(ctx context.Context) (*adminpb.VolumeListResponse, error) {
	r, err := c.pb.VolumeList(ctx, &adminpb.VolumeListRequest{})
	return r, FromStatus(err, c.socket)
}

// VolumeStatus returns a volume's status.
func (c *Client) VolumeStatus(ctx context.Context, name string) (*adminpb.VolumeStatusResponse, error) {
	r, err := c.pb.VolumeStatus(ctx, &adminpb.VolumeStatusRequest{Name: name})
	return r, FromStatus(err, c.socket)
}
