package grpctransport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dmsync/dmsync/internal/identity"
	"github.com/dmsync/dmsync/rpc"
	pb "github.com/dmsync/dmsync/rpc/dmsyncpb"
)

// untouched fails the test if anything reached the replica or its index.
func untouched(t *testing.T, r *receiverNode) {
	t.Helper()
	b, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatal("replica was written")
	}
	if info := r.root(); info.Chunks != 0 || info.Applying {
		t.Fatalf("replica index touched: %+v", info)
	}
}

func TestAuthRefused(t *testing.T) {
	const size = 1 << 20
	s := newSenderNode(t, size, 128<<10, 16<<10, 11)
	listed, err := identity.Init(filepath.Join(t.TempDir(), "listed"))
	if err != nil {
		t.Fatal(err)
	}
	r := newReceiverNode(t, size, listed.ID) // s is not listed
	r.start()
	ctx := ctxT(t)

	t.Run("unlisted id", func(t *testing.T) {
		s.maxAttempts = 3
		snd := s.sender(s.dial(r, DialOptions{}), r.id.ID)
		_, err := snd.RunOnce(ctx)
		if !errors.Is(err, rpc.ErrUnavailable) {
			t.Fatalf("unlisted sender: %v", err)
		}
		if !strings.Contains(r.logBuf.String(), s.id.ID) {
			t.Fatalf("receiver log lacks the refused id %s:\n%s", s.id.ID, r.logBuf.String())
		}
		if p, _ := s.log.Pending(testVol); len(p) != 8 {
			t.Fatalf("%d regions pending, want all 8", len(p))
		}
		untouched(t, r)
	})

	t.Run("listed certificate, wrong key", func(t *testing.T) {
		other, _ := identity.Init(filepath.Join(t.TempDir(), "other"))
		stolen := &identity.Identity{ID: listed.ID, Cert: tls.Certificate{Certificate: listed.Cert.Certificate, PrivateKey: other.Cert.PrivateKey}}
		c, err := Dial(r.addr, stolen, r.id.ID, slog.New(slog.DiscardHandler), DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := c.Root(cctx, testVol); !errors.Is(err, rpc.ErrUnavailable) {
			t.Fatalf("stolen certificate: %v", err)
		}
		untouched(t, r)
	})

	t.Run("wrong receiver", func(t *testing.T) {
		// The listed sender dials, but pins another receiver id.
		other, _ := identity.Init(filepath.Join(t.TempDir(), "other"))
		c, err := Dial(r.addr, listed, other.ID, slog.New(slog.DiscardHandler), DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := c.Root(cctx, testVol); !errors.Is(err, rpc.ErrUnavailable) {
			t.Fatalf("unpinned receiver accepted: %v", err)
		}
	})

	t.Run("plain gRPC", func(t *testing.T) {
		conn, err := grpc.NewClient("passthrough:///"+r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := pb.NewReplicaClient(conn).Apply(cctx)
		if err == nil {
			err = st.Send(&pb.ApplyRequest{Msg: &pb.ApplyRequest_Offer{Offer: &pb.Offer{Volume: testVol}}})
			if err == nil {
				_, err = st.Recv()
			}
		}
		if err == nil {
			t.Fatal("plain gRPC client was served")
		}
		untouched(t, r)
	})

	t.Run("plain TCP", func(t *testing.T) {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		if bytes.Contains(buf[:n], []byte("dmsync")) {
			t.Fatalf("server answered plain TCP with %q", buf[:n])
		}
		untouched(t, r)
	})

	t.Run("listed sender works", func(t *testing.T) {
		// Control: the same server serves the listed node.
		c, err := Dial(r.addr, listed, r.id.ID, slog.New(slog.DiscardHandler), DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Root(ctx, testVol); err != nil {
			t.Fatalf("listed sender: %v", err)
		}
	})
}

// TestBadOfferOverWire: a malformed offer sent through the real transport
// comes back as the receiver's sentinel.
func TestBadOfferOverWire(t *testing.T) {
	const size = 1 << 20
	s := newSenderNode(t, size, 128<<10, 16<<10, 12)
	r := newReceiverNode(t, size, s.id.ID)
	r.start()
	c := s.dial(r, DialOptions{})
	for _, tc := range []struct {
		name string
		o    rpc.Offer
		want error
	}{
		{"size", rpc.Offer{Volume: testVol, VolumeSize: size + 1, Params: s.chunker.Params(), Ranges: []rpc.Range{{Start: 0, End: 1}}}, rpc.ErrVolumeMismatch},
		{"unknown volume", rpc.Offer{Volume: "nope", VolumeSize: size, Params: s.chunker.Params()}, rpc.ErrUnknownVolume},
		{"past end", rpc.Offer{Volume: testVol, VolumeSize: size, Params: s.chunker.Params(), Ranges: []rpc.Range{{Start: size, End: size + 16<<10,
			Chunks: []rpc.Chunk{{Offset: size, Length: 16 << 10}}}}}, rpc.ErrBadOffer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := c.Apply(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			_, err = st.Offer(&tc.o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if rpc.Permanent(err) != (tc.want != rpc.ErrBadOffer) {
				t.Fatalf("Permanent(%v) wrong", err)
			}
		})
	}
	untouched(t, r)
}
