#!/usr/bin/env bash
# Regenerates the Go code of every .proto file in the repository, with the
# pinned plugin versions below and Debian bookworm's protoc (3.21, installed
# by scripts/deps.sh).
#
#   scripts/genproto.sh          regenerate in place
#   scripts/genproto.sh --check  regenerate, then fail if the committed
#                                code differs (make test runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

PROTOC_GEN_GO=v1.36.12      # google.golang.org/protobuf, as in go.mod
PROTOC_GEN_GO_GRPC=v1.6.2   # google.golang.org/grpc/cmd/protoc-gen-go-grpc

command -v protoc >/dev/null || { echo "genproto: protoc not found: run scripts/deps.sh (Debian package protobuf-compiler)" >&2; exit 1; }
bin="$PWD/.cache/protoc-plugins"
mkdir -p "$bin"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
export PATH="$bin:$PATH"

# Each directory's .proto files are one unit (they may import each other).
git ls-files '*.proto' | xargs -n1 dirname | sort -u | while read -r dir; do
	(cd "$dir" && protoc --proto_path=. \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		*.proto)
done

if [ "${1:-}" = --check ]; then
	stale=$(git status --porcelain -- '*.pb.go')
	if [ -n "$stale" ]; then
		echo "genproto: the committed generated code is not current; run scripts/genproto.sh and commit:" >&2
		echo "$stale" >&2
		git --no-pager diff --stat -- '*.pb.go' >&2
		exit 1
	fi
	echo "genproto: generated code is current"
fi
