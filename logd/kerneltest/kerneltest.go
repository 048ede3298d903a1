// Package kerneltest is a fake kernel for testing the dm-log-userspace
// server: it speaks the connector wire format over an in-memory logd.Conn,
// matches replies to requests by sequence number as the kernel does, and
// records every reply that the kernel would reject.
package kerneltest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/dmsync/dmsync/logd"
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("kerneltest: closed")

// Reply is what the daemon answered.
type Reply struct {
	Msg   logd.Message
	Error int32 // dm_ulog_request.error (negative errno)
	Data  []byte
}

// Kernel is the fake kernel side.
type Kernel struct {
	toDaemon chan []byte
	closed   chan struct{}
	once     sync.Once

	mu         sync.Mutex
	seq        uint32
	waiters    map[uint32]chan Reply
	violations []string
}

// New returns a fake kernel; Conn gives the daemon's end.
func New() *Kernel {
	return &Kernel{toDaemon: make(chan []byte, 4096), closed: make(chan struct{}), waiters: map[uint32]chan Reply{}}
}

// Conn returns the daemon's side of the connection.
func (k *Kernel) Conn() logd.Conn { return (*conn)(k) }

// Close stops the connection; pending requests fail.
func (k *Kernel) Close() { k.once.Do(func() { close(k.closed) }) }

// Violations lists replies the real kernel would reject or not match.
func (k *Kernel) Violations() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.violations...)
}

// SendRaw queues raw bytes to the daemon (for bad-input tests).
func (k *Kernel) SendRaw(b []byte) { k.toDaemon <- append([]byte(nil), b...) }

// Request sends one request and waits for its reply.
func (k *Kernel) Request(ctx context.Context, uuid string, luid uint64, t logd.RequestType, data []byte) (Reply, error) {
	ch := make(chan Reply, 1)
	k.mu.Lock()
	k.seq++
	seq := k.seq
	k.waiters[seq] = ch
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.waiters, seq)
		k.mu.Unlock()
	}()
	m := logd.Message{CnSeq: seq, Req: logd.Request{Luid: luid, Version: 3, Seq: seq, RequestType: uint32(t)}}
	m.Req.SetUUID(uuid)
	b, err := logd.AppendMessage(nil, &m, data)
	if err != nil {
		return Reply{}, err
	}
	select {
	case k.toDaemon <- b:
	case <-k.closed:
		return Reply{}, ErrClosed
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	}
	select {
	case r := <-ch:
		return r, nil
	case <-k.closed:
		return Reply{}, ErrClosed
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	}
}

// Do sends a request and turns an error reply into an error.
func (k *Kernel) Do(ctx context.Context, uuid string, luid uint64, t logd.RequestType, data []byte) ([]byte, error) {
	r, err := k.Request(ctx, uuid, luid, t, data)
	if err != nil {
		return nil, err
	}
	if r.Error != 0 {
		return r.Data, fmt.Errorf("%s of %s: daemon replied error %d", t, uuid, r.Error)
	}
	return r.Data, nil
}

// InSync asks IN_SYNC for one region.
func (k *Kernel) InSync(ctx context.Context, uuid string, region uint64) (bool, error) {
	d, err := k.Do(ctx, uuid, 1, logd.ReqInSync, logd.AppendU64(nil, region))
	if err != nil {
		return false, err
	}
	if len(d) != 8 {
		return false, fmt.Errorf("IN_SYNC reply of %d bytes", len(d))
	}
	return binary.NativeEndian.Uint64(d) == 1, nil
}

func (k *Kernel) violate(format string, args ...any) {
	k.mu.Lock()
	k.violations = append(k.violations, fmt.Sprintf(format, args...))
	k.mu.Unlock()
}

// receive is called with a reply datagram from the daemon.
func (k *Kernel) receive(b []byte) {
	m, rest, err := logd.DecodeMessage(b)
	if err != nil {
		k.violate("undecodable reply: %v", err)
		return
	}
	ne := binary.NativeEndian
	if len(rest) != 0 {
		k.violate("seq %d: %d bytes after the first message are ignored by the connector", m.CnSeq, len(rest))
	}
	// The connector requires exact lengths (cn_call_callback).
	nlLen, cnLen := int(ne.Uint32(b)), int(ne.Uint16(b[logd.NlmsgHdrLen+16:]))
	if nlLen != logd.NlmsgHdrLen+logd.CnMsgLen+cnLen || cnLen != logd.ULogHdrLen+len(m.Req.Data) {
		k.violate("seq %d: nlmsg_len %d, cn len %d, data %d do not add up", m.CnSeq, nlLen, cnLen, len(m.Req.Data))
	}
	if m.Req.Seq != m.CnSeq {
		k.violate("ulog seq %d differs from cn_msg seq %d", m.Req.Seq, m.CnSeq)
	}
	k.mu.Lock()
	ch := k.waiters[m.CnSeq]
	k.mu.Unlock()
	if ch == nil {
		return // late reply to a timed-out request: the kernel drops it too
	}
	select {
	case ch <- Reply{Msg: m, Error: m.Req.Error, Data: append([]byte(nil), m.Req.Data...)}:
	default:
		k.violate("seq %d answered twice", m.CnSeq)
	}
}

// conn is the daemon's end.
type conn Kernel

func (c *conn) Receive(ctx context.Context) ([][]byte, error) {
	k := (*Kernel)(c)
	var out [][]byte
	select {
	case b := <-k.toDaemon:
		out = append(out, b)
	case <-k.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		select {
		case b := <-k.toDaemon:
			out = append(out, b)
		default:
			return out, nil
		}
	}
}

func (c *conn) Send(msg []byte) error {
	k := (*Kernel)(c)
	select {
	case <-k.closed:
		return ErrClosed
	default:
	}
	k.receive(append([]byte(nil), msg...))
	return nil
}

func (c *conn) Close() error {
	(*Kernel)(c).Close()
	return nil
}

// ErrNoRoom is the kernel's -ENOSPC: the answer was larger than the room
// the caller had for it.
var ErrNoRoom = errors.New("kerneltest: answer larger than the room for it (-ENOSPC)")

const errnoSRCH = 3

// Log is one table instance of a userspace log as the kernel's
// dm-log-userspace drives it (userspace_do_request): a request answered
// -ESRCH makes it re-send CTR (with the CTR string's trailing NUL) and
// RESUME, then retry the request. Like the kernel, it keeps the size of
// any answer as the room for the next try of the same request, so an
// -ESRCH reply with a shorter payload than the real answer makes the retry
// fail with ErrNoRoom.
type Log struct {
	K    *Kernel
	UUID string
	Luid uint64
	Args string // the CTR string, e.g. "2048 core 128 nosync"
}

// Call sends request t with room bytes for the answer and returns the
// answer; a non-zero error reply is returned as an error.
func (l *Log) Call(ctx context.Context, t logd.RequestType, data []byte, room int) ([]byte, error) {
	for {
		r, err := l.K.Request(ctx, l.UUID, l.Luid, t, data)
		if err != nil {
			return nil, err
		}
		if len(r.Data) > room {
			return nil, fmt.Errorf("%s of %s: %d bytes for %d of room: %w", t, l.UUID, len(r.Data), room, ErrNoRoom)
		}
		room = len(r.Data)
		if r.Error != -errnoSRCH {
			if r.Error != 0 {
				return r.Data, fmt.Errorf("%s of %s: daemon replied error %d", t, l.UUID, r.Error)
			}
			return r.Data, nil
		}
		if _, err := l.K.Do(ctx, l.UUID, l.Luid, logd.ReqCtr, append([]byte(l.Args), 0)); err != nil {
			return nil, fmt.Errorf("reconnect: %w", err)
		}
		if _, err := l.K.Do(ctx, l.UUID, l.Luid, logd.ReqResume, nil); err != nil {
			return nil, fmt.Errorf("reconnect: %w", err)
		}
	}
}

// InSync asks IN_SYNC for one region with the kernel's 8 bytes of room.
func (l *Log) InSync(ctx context.Context, region uint64) (bool, error) {
	d, err := l.Call(ctx, logd.ReqInSync, logd.AppendU64(nil, region), 8)
	if err != nil {
		return false, err
	}
	if len(d) != 8 {
		return false, fmt.Errorf("IN_SYNC reply of %d bytes", len(d))
	}
	return binary.NativeEndian.Uint64(d) == 1, nil
}
