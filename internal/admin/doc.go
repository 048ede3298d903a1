// Package admin serves and dials the admin API (internal/adminpb) between
// the dmsync CLI and dmsyncd over a root-only unix socket, and holds the
// API's error vocabulary (errors.go): the sentinels clients branch on and
// the one mapping between them and gRPC codes.
//
// The daemon wires it in with:
//
//	ln, err := admin.Listen(admin.DefaultSocket, logger)
//	g := grpc.NewServer()
//	admin.Register(g, admin.NewServer(builder, logger)) // Volumes
//	replicate.Register(g, manager)                      // Replication
//	go g.Serve(ln)
//
// and the CLI with admin.Dial, whose RPCs return errors matching
// ErrInvalid, ErrNotFound, ... (never a raw gRPC status or a daemon
// package's sentinel).
package admin
