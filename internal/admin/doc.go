// Package admin serves and dials the admin API (internal/adminpb) between
// the dmsync CLI and dmsyncd over a root-only unix socket.
//
// The daemon wires it in with:
//
//	srv := admin.NewServer(builder, logger)
//	ln, err := admin.Listen(admin.DefaultSocket)
//	g := grpc.NewServer()
//	admin.Register(g, srv)
//	go g.Serve(ln)
package admin
