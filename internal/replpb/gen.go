// Package replpb holds the replication admin API's protobuf and gRPC code
// (generated from replication.proto and committed).
//
// Regenerate with `go generate ./internal/replpb` using protoc 3.21
// (Debian protobuf-compiler) and the plugins:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
package replpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative replication.proto
