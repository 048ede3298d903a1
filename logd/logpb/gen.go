// Package logpb holds the protobuf and gRPC code of the dirty log's local
// API (generated from log.proto and committed): the log server serves the
// Log service on a root-only unix socket for the replicator process; the
// Daemon service's Health is also served on the admin socket for the CLI.
//
// Regenerate with `make genproto` (scripts/genproto.sh: Debian's protoc
// 3.21 and the pinned plugins); `make test` fails if the committed code is
// stale.
package logpb

//go:generate ../../scripts/genproto.sh
