package grpctransport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"

	"github.com/dmsync/dmsync/blockhash"
	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// Client is an rpc.Transport to one receiver over mutual-TLS gRPC.
type Client struct {
	conn  *grpc.ClientConn
	c     pb.ReplicaClient
	stall time.Duration
}

// DialOptions tunes Dial; the zero value is fine.
type DialOptions struct {
	// Dialer replaces the TCP dialer (tests inject faults with it).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// MaxReconnectDelay caps gRPC's reconnect backoff (default 5 s).
	MaxReconnectDelay time.Duration
	// Liveness: keepalive pings and the batch stall bound (zero fields
	// take DefaultLiveness's).
	Liveness Liveness
}

// Dial returns a client for the receiver at addr whose node id must be
// peerID. The connection is made lazily and re-made with backoff whenever
// it breaks.
func Dial(addr string, self *identity.Identity, peerID string, log *slog.Logger, opts DialOptions) (*Client, error) {
	if opts.MaxReconnectDelay == 0 {
		opts.MaxReconnectDelay = 5 * time.Second
	}
	creds := withRecords(credentials.NewTLS(identity.ClientConfig(self, identity.AllowIDs(peerID), log)))
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: opts.MaxReconnectDelay},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg), grpc.ForceCodecV2(codec{})),
		grpc.WithInitialWindowSize(4 << 20),
		grpc.WithInitialConnWindowSize(8 << 20),
		grpc.WithWriteBufferSize(grpcWriteBuf),
		experimental.WithBufferPool(sharedPool),
	}
	live := opts.Liveness.withDefaults()
	dopts = append(dopts, live.dialOptions()...)
	if opts.Dialer != nil {
		dopts = append(dopts, grpc.WithContextDialer(opts.Dialer))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &Client{conn: conn, c: pb.NewReplicaClient(conn), stall: live.Stall}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Root implements rpc.Transport.
func (c *Client) Root(ctx context.Context, volume string) (rpc.RootInfo, error) {
	r, err := c.c.Root(ctx, &pb.RootRequest{Volume: volume})
	if err != nil {
		return rpc.RootInfo{}, fromStatus(err)
	}
	id, err := toID(r.GetRoot())
	if err != nil {
		return rpc.RootInfo{}, err
	}
	info := rpc.RootInfo{Root: id, Chunks: r.GetChunks(), VolumeSize: r.GetVolumeSize(), Applying: r.GetApplying(), Point: pointFromPB(r.GetPoint())}
	return info, nil
}

// Commit implements rpc.Transport.
func (c *Client) Commit(ctx context.Context, cm rpc.Commit) (rpc.Committed, error) {
	r, err := c.c.Commit(ctx, &pb.CommitRequest{Volume: cm.Volume, Point: cm.Point, Batches: uint32(cm.Batches), TakenAtUnixNano: cm.TakenAt.UnixNano()})
	if err != nil {
		return rpc.Committed{}, fromStatus(err)
	}
	id, err := toID(r.GetRoot())
	if err != nil {
		return rpc.Committed{}, err
	}
	return rpc.Committed{Point: pointFromPB(r.GetPoint()), Root: id, Chunks: r.GetChunks()}, nil
}

// Tree implements rpc.Transport: a NodeSource asking the receiver for one
// level's nodes per call.
func (c *Client) Tree(ctx context.Context, volume string) blockhash.NodeSource {
	return &remoteTree{ctx: ctx, c: c.c, volume: volume}
}

type remoteTree struct {
	ctx    context.Context
	c      pb.ReplicaClient
	volume string
}

func (t *remoteTree) TreeHeight() (int, error) {
	r, err := t.c.TreeNodes(t.ctx, &pb.TreeNodesRequest{Volume: t.volume, Level: ^uint32(0)})
	if err != nil {
		return 0, fromStatus(err)
	}
	return int(r.GetHeight()), nil
}

func (t *remoteTree) TreeNodes(k int, ranges []blockhash.Range) ([]blockhash.Node, error) {
	req := &pb.TreeNodesRequest{Volume: t.volume, Level: uint32(k)}
	for _, r := range ranges {
		req.Ranges = append(req.Ranges, &pb.ByteRange{Offset: r.Off, Length: r.Len})
	}
	r, err := t.c.TreeNodes(t.ctx, req)
	if err != nil {
		return nil, fromStatus(err)
	}
	out := make([]blockhash.Node, len(r.GetNodes()))
	for i, n := range r.GetNodes() {
		h, err := toID(n.GetHash())
		if err != nil {
			return nil, err
		}
		out[i] = blockhash.Node{Offset: n.GetOffset(), Length: n.GetLength(), Hash: h, First: int(n.GetFirst()), Count: int(n.GetCount())}
	}
	return out, nil
}

// Apply implements rpc.Transport. The stream is aborted with
// rpc.ErrUnavailable once it makes no progress for the Liveness stall
// bound.
func (c *Client) Apply(ctx context.Context) (rpc.ApplyStream, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := newStallTimer(c.stall, cancel)
	s, err := c.c.Apply(ctx)
	if err != nil {
		t.stop()
		cancel(nil)
		return nil, stallCause(ctx, t, fromStatus(err))
	}
	return &stream{s: s, ctx: ctx, cancel: cancel, stall: t}, nil
}

type stream struct {
	s      pb.Replica_ApplyClient
	ctx    context.Context
	cancel context.CancelCauseFunc
	stall  *stallTimer
	offer  *rpc.Offer
}

// send sends one message and counts it as progress.
func (s *stream) send(m *pb.ApplyRequest) error {
	if err := s.s.Send(m); err != nil {
		return s.err(err)
	}
	s.stall.progress()
	return nil
}

// recv receives one message and counts it as progress.
func (s *stream) recv() (*pb.ApplyResponse, error) {
	r, err := s.s.Recv()
	if err != nil {
		return nil, stallCause(s.ctx, s.stall, fromStatus(err))
	}
	s.stall.progress()
	return r, nil
}

func (s *stream) Offer(o *rpc.Offer) (rpc.Need, error) {
	s.offer = o
	if err := s.send(&pb.ApplyRequest{Msg: &pb.ApplyRequest_Offer{Offer: offerToPB(o)}}); err != nil {
		return rpc.Need{}, err
	}
	r, err := s.recv()
	if err != nil {
		return rpc.Need{}, err
	}
	n := r.GetNeed()
	if n == nil {
		return rpc.Need{}, fmt.Errorf("receiver answered an offer with %T: %w", r.Msg, rpc.ErrProtocol)
	}
	return needFromPB(n, s.offer)
}

func (s *stream) SendBlocks(index uint32, data []byte) error {
	return s.send(&pb.ApplyRequest{Msg: &pb.ApplyRequest_Data{Data: &pb.Data{Index: index, Data: data, Partial: true}}})
}

func (s *stream) Send(index uint32, data []byte) error {
	return s.send(&pb.ApplyRequest{Msg: &pb.ApplyRequest_Data{Data: &pb.Data{Index: index, Data: data}}})
}

func (s *stream) Finish(wantRoot bool) (rpc.Ack, []int, error) {
	if err := s.send(&pb.ApplyRequest{Msg: &pb.ApplyRequest_Done{Done: &pb.Done{WantRoot: wantRoot}}}); err != nil {
		return rpc.Ack{}, nil, err
	}
	r, err := s.recv()
	if err != nil {
		return rpc.Ack{}, nil, err
	}
	if n := r.GetNeed(); n != nil {
		missing, err := fromBitmap(n.GetMissing(), s.offer.NumChunks())
		if err != nil {
			return rpc.Ack{}, nil, err
		}
		var resend []int
		for i, m := range missing {
			if m {
				resend = append(resend, i)
			}
		}
		if len(resend) == 0 {
			return rpc.Ack{}, nil, fmt.Errorf("receiver asked for nothing after done: %w", rpc.ErrProtocol)
		}
		return rpc.Ack{}, resend, nil
	}
	a := r.GetAck()
	if a == nil {
		return rpc.Ack{}, nil, fmt.Errorf("receiver answered done with %T: %w", r.Msg, rpc.ErrProtocol)
	}
	if len(a.GetRoot()) == 0 {
		if wantRoot {
			return rpc.Ack{}, nil, fmt.Errorf("receiver acked without the root asked for: %w", rpc.ErrProtocol)
		}
		return rpc.Ack{}, nil, nil
	}
	root, err := toID(a.GetRoot())
	if err != nil {
		return rpc.Ack{}, nil, err
	}
	return rpc.Ack{HasRoot: true, Root: root, Chunks: a.GetChunks()}, nil, nil
}

// err turns a Send error into the stream's real status: a failed Send
// returns io.EOF and the status comes from Recv.
func (s *stream) err(err error) error {
	if _, rerr := s.s.Recv(); rerr != nil {
		return stallCause(s.ctx, s.stall, fromStatus(rerr))
	}
	return stallCause(s.ctx, s.stall, fromStatus(err))
}

func (s *stream) Close() {
	s.stall.stop()
	s.cancel(nil)
}
