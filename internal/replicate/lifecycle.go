package replicate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/dmsync/dmsync/internal/admin"
	"github.com/dmsync/dmsync/internal/identity"
)

// The verbs that undo: stop a send, remove a receive, remove (revoke) a
// peer, and resync a sent volume. Each saves the configuration first and
// then stops what ran, so a failed save changes nothing.

// StopSend stops replicating volume and forgets the send. It returns once
// the sender has stopped; regions it had not sent stay pending in the
// dirty log.
func (m *Manager) StopSend(volume string) (Send, error) {
	m.mu.Lock()
	st, ok := m.sends[volume]
	if !ok {
		m.mu.Unlock()
		return Send{}, admin.Errorf(admin.ErrNotFound, "%s is not replicated (see `dmsync status`)", volume)
	}
	err := m.change(func(c *Config) error {
		c.Sends = slices.DeleteFunc(c.Sends, func(s Send) bool { return s.Volume == volume })
		return nil
	})
	if err != nil {
		m.mu.Unlock()
		return Send{}, err
	}
	delete(m.sends, volume)
	m.mu.Unlock()
	st.cancel()
	<-st.done
	m.wire.forget(st.send)
	return st.send, nil
}

// RemoveReceive stops receiving volume and forgets it. The image keeps
// its bytes; the store keeps the replica's index, so receiving the same
// volume again into the same image resumes (see Receive for a new image).
func (m *Manager) RemoveReceive(volume string) (Receive, error) {
	m.mu.Lock()
	i := slices.IndexFunc(m.cfg.Receives, func(r Receive) bool { return r.Volume == volume })
	if i < 0 {
		m.mu.Unlock()
		return Receive{}, admin.Errorf(admin.ErrNotFound, "%s is not received here (see `dmsync status`)", volume)
	}
	r := m.cfg.Receives[i]
	err := m.change(func(c *Config) error {
		c.Receives = slices.Delete(c.Receives, i, i+1)
		return nil
	})
	if err != nil {
		m.mu.Unlock()
		return Receive{}, err
	}
	gen := m.restartReceiverLocked()
	running := m.recv != nil
	m.mu.Unlock()
	if running {
		waitReceiver(gen)
	}
	return r, nil
}

// RemovePeer unpins a peer and revokes its key: sends to it stop, receives
// from it are removed, and the receiver is rebuilt without it, which
// closes its connections and refuses it in the TLS handshake. Without
// force a peer that a send or receive uses is refused (ErrBusy), naming
// them. It returns the volumes whose send stopped and whose receive was
// removed.
func (m *Manager) RemovePeer(id string, force bool) (sends, receives []string, err error) {
	pid, err := identity.ParseID(id)
	if err != nil {
		return nil, nil, admin.Errorf(admin.ErrInvalid, "peer %q is not a node id: copy it from `dmsync peer list`", id)
	}
	m.mu.Lock()
	pinned := slices.ContainsFunc(m.cfg.Peers, func(p Peer) bool { return p.ID == pid })
	var stopped []*sendState
	for _, s := range m.cfg.Sends {
		if s.Peer == pid {
			sends = append(sends, s.Volume)
		}
	}
	for _, r := range m.cfg.Receives {
		if r.From == pid {
			receives = append(receives, r.Volume)
		}
	}
	if !pinned && len(receives) == 0 {
		m.mu.Unlock()
		return nil, nil, admin.Errorf(admin.ErrNotFound, "no peer %s: neither pinned nor sending here (see `dmsync peer list`)", pid)
	}
	if !force && len(sends)+len(receives) > 0 {
		m.mu.Unlock()
		var uses []string
		for _, v := range sends {
			uses = append(uses, "send of "+v+" (`dmsync replicate stop "+v+"`)")
		}
		for _, v := range receives {
			uses = append(uses, "receive of "+v+" (`dmsync receive remove "+v+"`)")
		}
		return nil, nil, admin.Errorf(admin.ErrBusy, "peer %s is in use by the %s: stop those first, or add --force to stop them with it", pid, strings.Join(uses, ", "))
	}
	err = m.change(func(c *Config) error {
		c.Peers = slices.DeleteFunc(c.Peers, func(p Peer) bool { return p.ID == pid })
		c.Sends = slices.DeleteFunc(c.Sends, func(s Send) bool { return s.Peer == pid })
		c.Receives = slices.DeleteFunc(c.Receives, func(r Receive) bool { return r.From == pid })
		return nil
	})
	if err != nil {
		m.mu.Unlock()
		return nil, nil, err
	}
	for _, v := range sends {
		stopped = append(stopped, m.sends[v])
		delete(m.sends, v)
	}
	gen := m.restartReceiverLocked()
	running := m.recv != nil
	m.mu.Unlock()
	for _, st := range stopped {
		if st != nil {
			st.cancel()
			<-st.done
			m.wire.forget(st.send)
		}
	}
	if running {
		waitReceiver(gen)
	}
	return sends, receives, nil
}

// Resync makes every region of a sent volume pending again, as for a new
// peer: the peer is offered the whole volume and fetches the chunks it
// lacks. It returns the regions now pending.
func (m *Manager) Resync(ctx context.Context, volume string) (uint64, error) {
	st, err := m.sendState(volume)
	if err != nil {
		return 0, err
	}
	src, err := m.opts.Resolve(ctx, st.send.Volume)
	if err != nil {
		return 0, err
	}
	p, ok := m.opts.Log.(fullSyncer)
	if !ok {
		return 0, admin.Errorf(admin.ErrUnsupported, "this dirty log cannot make a volume pending again")
	}
	// The running sender remembers what the peer acknowledged and would
	// skip those chunks: a resync is for a peer whose replica may no
	// longer hold them (its image was reset or damaged).
	st.mu.Lock()
	live := st.sender
	st.mu.Unlock()
	if live != nil {
		live.ForgetAcked()
	}
	if err := p.PendAll(src.LogUUID); err != nil {
		return 0, fmt.Errorf("resync %s: %w", volume, err)
	}
	pending, err := m.opts.Log.Pending(src.LogUUID)
	if err != nil {
		return 0, fmt.Errorf("resync %s: %w", volume, err)
	}
	return uint64(len(pending)), nil
}
