package admin

import "github.com/dmsync/dmsync/internal/replpb"

// Replication returns a client of the replication admin API, served by
// dmsyncd on the same socket.
func (c *Client) Replication() replpb.ReplicationClient { return replpb.NewReplicationClient(c.conn) }

// Err turns an error of a replication RPC into one that wraps dmtarget's
// sentinels, as the volume RPCs' errors do (see FromStatus).
func (c *Client) Err(err error) error { return FromStatus(err, c.socket) }
