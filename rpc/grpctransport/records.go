package grpctransport

import (
	"bufio"
	"context"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/credentials"
)

// # TLS records and system calls
//
// crypto/tls hands every record (at most 16 KiB of payload) to the
// connection in a write of its own, and reads the socket about a record at
// a time. A full sync moves 65536 records per GiB each way, and on
// loopback the per-call cost of those writes and reads is about a third
// of the TCP copy's CPU (measured: 1 GiB in 16 KiB writes, 0.47 s of CPU;
// in 512 KiB writes with a copy into the buffer, 0.33 s).
//
// recordConn sits between crypto/tls and the TCP connection. While a
// gRPC write is under way (flushConn arms it) it gathers the records that
// write makes into one buffer and sends them in as few write(2) calls as
// the buffer allows; at the end of the gRPC write everything is on the
// socket, so nothing waits in the buffer for a later write. Records TLS
// writes on its own (the handshake, key updates, alerts, close_notify)
// are written at once when no gRPC write is under way, and keep their
// order when one is. Reads go through a bufio.Reader of recordBuf bytes.

const (
	// grpcWriteBuf is gRPC's write buffer: the most it hands to one TLS
	// write.
	grpcWriteBuf = 512 << 10
	// recordBuf is the most bytes gathered into one write(2), and the size
	// of the read buffer: one gRPC write's records, with the 22 bytes each
	// record adds (a record holds 1 KiB or more) and room to spare.
	recordBuf = grpcWriteBuf + grpcWriteBuf/32
)

// recordConn is the raw connection under TLS.
type recordConn struct {
	net.Conn
	r *bufio.Reader

	mu    sync.Mutex
	armed bool
	buf   []byte
	err   error // the first write error: every later write fails with it

	// flushing is set while a flush writes to the socket.
	flushing atomic.Bool
}

func newRecordConn(c net.Conn) *recordConn {
	return &recordConn{Conn: c, r: bufio.NewReaderSize(c, recordBuf)}
}

// Read reads through the buffer.
func (c *recordConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write gathers p while armed, and writes it at once otherwise.
func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.armed {
		n, err := c.Conn.Write(p)
		c.err = err
		return n, err
	}
	if len(c.buf)+len(p) > recordBuf {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= recordBuf {
		n, err := c.Conn.Write(p)
		c.err = err
		return n, err
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *recordConn) arm() {
	c.mu.Lock()
	c.armed = true
	if c.buf == nil {
		c.buf = make([]byte, 0, recordBuf)
	}
	c.mu.Unlock()
}

// flush writes what was gathered and disarms.
func (c *recordConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	return c.flushLocked()
}

func (c *recordConn) flushLocked() error {
	if c.err != nil {
		c.buf = c.buf[:0]
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	c.flushing.Store(true)
	_, err := c.Conn.Write(c.buf)
	c.flushing.Store(false)
	c.buf = c.buf[:0]
	c.err = err
	return err
}

// flushConn is the TLS connection gRPC sees: each of its writes leaves on
// the socket in few system calls before it returns.
type flushConn struct {
	net.Conn // the TLS connection
	rec      *recordConn
}

func (c *flushConn) Write(p []byte) (int, error) {
	c.rec.arm()
	n, err := c.Conn.Write(p)
	if ferr := c.rec.flush(); err == nil && ferr != nil {
		// TLS counted the records as written; they were not.
		return 0, ferr
	}
	return n, err
}

// Close closes the connection. A flush blocked on a peer that does not
// read is ended first, by closing the socket, as crypto/tls does for a
// write in flight: otherwise TLS's close_notify would wait for it (up to
// the 5 s TLS allows it).
func (c *flushConn) Close() error {
	if c.rec.flushing.Load() {
		c.rec.Conn.Close()
	}
	return c.Conn.Close()
}

// recordCreds puts a recordConn under the TLS of c.
type recordCreds struct {
	credentials.TransportCredentials
}

func withRecords(c credentials.TransportCredentials) credentials.TransportCredentials {
	return recordCreds{TransportCredentials: c}
}

func (c recordCreds) Clone() credentials.TransportCredentials {
	return recordCreds{TransportCredentials: c.TransportCredentials.Clone()}
}

func (c recordCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	rec := newRecordConn(raw)
	conn, ai, err := c.TransportCredentials.ClientHandshake(ctx, authority, rec)
	if err != nil {
		return nil, nil, err
	}
	return &flushConn{Conn: conn, rec: rec}, ai, nil
}

func (c recordCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	rec := newRecordConn(raw)
	conn, ai, err := c.TransportCredentials.ServerHandshake(rec)
	if err != nil {
		return nil, nil, err
	}
	return &flushConn{Conn: conn, rec: rec}, ai, nil
}
