// Package adminpb holds the admin API between the dmsync CLI and dmsyncd:
// the Volumes and Replication gRPC services, served side by side on the
// daemon's root-only unix socket. The code is generated from
// volumes.proto and replication.proto and committed. Errors travel as
// gRPC status codes; internal/admin is the one place that maps them.
//
// Regenerate with `make genproto` (scripts/genproto.sh: Debian's protoc
// 3.21 and the pinned plugins); `make test` fails if the committed code is
// stale.
package adminpb

//go:generate ../../scripts/genproto.sh
