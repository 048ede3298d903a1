// Package replicate runs a node's replication: it keeps the node's
// configuration (pinned peers, volumes it sends and receives), runs one
// rpc.Sender per sent volume and an rpc.Receiver behind a mutual-TLS gRPC
// listener, reports progress, and serves the replication part of the admin
// API (internal/adminpb) that the dmsync CLI uses.
//
// It is the glue between the dirty log (logd.Replicator), the replication
// protocol (package rpc) and the daemon; the daemon supplies how a volume
// name resolves to a device (package dmtarget on a real host).
package replicate
