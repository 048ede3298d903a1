package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dmsync/dmsync/internal/adminpb"
)

// Client is a connection to dmsyncd's admin socket. Every RPC made through
// it returns errors that match the vocabulary of errors.go (FromStatus is
// applied by an interceptor), never a raw gRPC status.
type Client struct {
	conn   *grpc.ClientConn
	socket string
}

// Dial connects to dmsyncd's admin socket. It tries the socket once so
// that the common mistakes get their own message: a missing socket or one
// that refuses connections is ErrNotRunning, a socket the caller may not
// open is ErrPermission.
func Dial(ctx context.Context, socket string) (*Client, error) {
	if err := probe(ctx, socket); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///dmsyncd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return FromStatus(invoker(ctx, method, req, reply, cc, opts...), socket)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, FromStatus(err, socket)
			}
			return &clientStream{ClientStream: s, socket: socket}, nil
		}))
	if err != nil {
		return nil, fmt.Errorf("dial dmsyncd at %s: %w", socket, err)
	}
	return &Client{conn: conn, socket: socket}, nil
}

// probe connects to the socket once and classifies a failure.
func probe(ctx context.Context, socket string) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "unix", socket)
	if err == nil {
		return c.Close()
	}
	return dialError(socket, err)
}

// dialError turns the failure to connect to socket into the error a user
// can act on.
func dialError(socket string, err error) error {
	switch {
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w on %s: run as root", ErrPermission, socket)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w (no socket at %s): start it with `systemctl start dmsyncd`", ErrNotRunning, socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (%s refuses connections): start it with `systemctl start dmsyncd`", ErrNotRunning, socket)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("%w: connect to %s: %v (see `systemctl status dmsyncd`)", ErrNotRunning, socket, err)
}

// clientStream maps the errors of a streaming RPC like the unary ones.
type clientStream struct {
	grpc.ClientStream
	socket string
}

func (s *clientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return FromStatus(err, s.socket)
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the connection, for services added to the socket later.
func (c *Client) Conn() grpc.ClientConnInterface { return c.conn }

// Volumes is the client of the Volumes service.
func (c *Client) Volumes() adminpb.VolumesClient { return adminpb.NewVolumesClient(c.conn) }

// Replication is the client of the Replication service.
func (c *Client) Replication() adminpb.ReplicationClient {
	return adminpb.NewReplicationClient(c.conn)
}
