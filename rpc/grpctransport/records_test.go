package grpctransport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/dmsync/dmsync/internal/identity"
)

// socketConn counts the writes that reach the socket, and fails them
// once failAfter bytes went through (if failAfter > 0).
type socketConn struct {
	net.Conn
	writes    atomic.Int64
	written   atomic.Int64
	failAfter int64
}

func (c *socketConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	if c.failAfter > 0 && c.written.Load()+int64(len(p)) > c.failAfter {
		return 0, syscall.EPIPE
	}
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// tlsPair returns both ends of a TLS connection over loopback TCP, made by
// the credentials gRPC uses (with recordConn under them when records is
// set), and the client's raw connection.
func tlsPair(t *testing.T, records bool, failAfter int64) (client, server net.Conn, raw *socketConn) {
	t.Helper()
	a, err := identity.Init(filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := identity.Init(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	cc := credentials.NewTLS(identity.ClientConfig(a, identity.AllowIDs(b.ID), log))
	sc := credentials.NewTLS(identity.ServerConfig(b, identity.AllowIDs(a.ID), log))
	if records {
		cc, sc = withRecords(cc), withRecords(sc)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var (
		wg   sync.WaitGroup
		serr error
	)
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			serr = err
			return
		}
		server, _, serr = sc.ServerHandshake(c)
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw = &socketConn{Conn: c, failAfter: failAfter}
	client, _, err = cc.ClientHandshake(context.Background(), "peer", raw)
	wg.Wait()
	if err != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", err, serr)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server, raw
}

// TestRecordsGatherWrites: the records of one write leave in a few
// system calls, not one each, and arrive intact and in order; what TLS
// writes on its own (close_notify) still reaches the peer.
func TestRecordsGatherWrites(t *testing.T) {
	const total, piece = 8 << 20, grpcWriteBuf
	data := make([]byte, total)
	_, _ = rand.NewChaCha8([32]byte{3}).Read(data)
	for _, records := range []bool{false, true} {
		client, server, raw := tlsPair(t, records, 0)
		before := raw.writes.Load() // the handshake's
		got := make(chan []byte, 1)
		go func() {
			b, err := io.ReadAll(server) // until close_notify
			if err != nil {
				t.Errorf("records=%v: server read: %v", records, err)
			}
			got <- b
		}()
		for off := 0; off < total; off += piece {
			if n, err := client.Write(data[off : off+piece]); n != piece || err != nil {
				t.Fatalf("records=%v: write at %d: %d, %v", records, off, n, err)
			}
		}
		writes := raw.writes.Load() - before
		client.Close()
		if b := <-got; !bytes.Equal(b, data) {
			t.Fatalf("records=%v: the server read %d bytes, not the %d written", records, len(b), total)
		}
		// 16 KiB records, 512 of them; gathered, one write per Write.
		t.Logf("records=%v: %d MiB in %d writes to the socket", records, total>>20, writes)
		if records && writes > total/piece {
			t.Errorf("with records gathered: %d writes for %d bytes, want at most %d", writes, total, total/piece)
		}
		if !records && writes < total/(16<<10) {
			t.Errorf("plain TLS: %d writes, want one per record (the baseline this layer removes)", writes)
		}
	}
}

// TestRecordsWriteError: a write the socket refuses fails the gRPC write
// it belongs to, though TLS had taken it, and every write after it.
func TestRecordsWriteError(t *testing.T) {
	client, _, _ := tlsPair(t, true, 0)
	fc := client.(*flushConn)
	fc.rec.Conn.(*socketConn).failAfter = 1 // from now on
	if _, err := client.Write(make([]byte, 100<<10)); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write over a failing socket: %v, want EPIPE", err)
	}
	if _, err := client.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("a later write: %v, want the first error again", err)
	}
}

// TestRecordsCloseEndsBlockedFlush: closing a connection whose peer stopped
// reading ends a flush blocked on the full socket at once, as crypto/tls
// does for a blocked write, rather than after close_notify's 5 s.
func TestRecordsCloseEndsBlockedFlush(t *testing.T) {
	client, _, _ := tlsPair(t, true, 0) // the server never reads
	fc := client.(*flushConn)
	done := make(chan error, 1)
	go func() {
		piece := make([]byte, grpcWriteBuf)
		for {
			if _, err := client.Write(piece); err != nil {
				done <- err
				return
			}
		}
	}()
	for !fc.rec.flushing.Load() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the socket's buffers are full: the flush is blocked
	start := time.Now()
	client.Close()
	err := <-done
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close and the blocked write took %v (close_notify's deadline is 5 s)", d)
	}
	if err == nil {
		t.Fatal("the blocked write succeeded after Close")
	}
}
