# dmsync: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need first (scripts/deps.sh: Debian packages and
# the guest kernel, idempotent and quick when already there).

export PATH := $(PATH):/usr/local/go/bin
GO ?= go
GOTEST_FLAGS ?=
# Stamped into the binaries (`dmsync --version`).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/dmsync/dmsync/internal/version.Version=$(VERSION)

.PHONY: all deps build deb test test-unit test-guest demo fuzz bench clean genproto verify-gen

all: build

deps:
	@bash scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

# The Debian package (scripts/deb.sh): bin/dmsync_VERSION_ARCH.deb.
deb:
	@bash scripts/deb.sh bin

# Every test: generated code current, vet, unit tests (race detector), then
# the real-kernel tests in the QEMU guest.
test: deps verify-gen
	$(GO) vet ./...
	$(GO) test -race $(GOTEST_FLAGS) ./...
	DMSYNC_VM=1 $(GO) test -count=1 -timeout 70m -v $(GOTEST_FLAGS) ./test/vm

test-unit:
	$(GO) test $(GOTEST_FLAGS) ./...

test-guest: deps
	DMSYNC_VM=1 $(GO) test -count=1 -timeout 70m -v $(GOTEST_FLAGS) ./test/vm

# The user story in the guest, step by step, with a summary at the end.
demo: deps
	@DMSYNC_VM=1 DMSYNC_DEMO=1 $(GO) test -count=1 -timeout 70m -run '^TestDemo$$' -v ./test/vm

# One table: dmsync against rsync -W, a raw TCP copy, rsync --inplace
# --no-whole-file and fastcdc-go, medians of interleaved rounds on this
# machine (BENCH_FLAGS, e.g. -size 256 -rounds 5; see bench/replbench).
BENCH_FLAGS ?=
bench:
	@command -v rsync >/dev/null || { apt-get update -qq && apt-get install -y -qq rsync; }
	$(GO) run ./bench/replbench $(BENCH_FLAGS)

# Regenerate the protobuf code and the BLAKE3 assembly (committed);
# verify-gen fails if either is stale.
genproto:
	@bash scripts/genproto.sh
	$(GO) generate ./internal/blake3batch

verify-gen: deps
	@bash scripts/genproto.sh --check
	@t=$$(mktemp) && $(GO) run ./internal/blake3batch/gen -out $$t && cmp -s $$t internal/blake3batch/sum_amd64.s || { echo "verify-gen: internal/blake3batch/sum_amd64.s is stale: run go generate ./internal/blake3batch" >&2; rm -f $$t; exit 1; }; rm -f $$t

clean:
	rm -rf bin .cache/vm
