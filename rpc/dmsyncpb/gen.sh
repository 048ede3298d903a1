#!/bin/sh
# Regenerates the Go code for the dmsync wire protocol.
# Needs: protoc (Debian: apt-get install -y protobuf-compiler),
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
# Run from anywhere; `git diff --exit-code` afterwards verifies the committed code.
set -eu
cd "$(dirname "$0")"
PATH="$(go env GOPATH)/bin:$PATH"
protoc --proto_path=. \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	replica.proto
