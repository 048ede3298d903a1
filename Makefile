# dmsync: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need first (scripts/deps.sh: Debian packages and
# the guest kernel, idempotent and quick when already there).

export PATH := $(PATH):/usr/local/go/bin
GO ?= go
GOTEST_FLAGS ?=

.PHONY: all deps build test test-unit test-guest demo fuzz bench clean

all: build

deps:
	@bash scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...

# Every test: vet, unit tests (race detector), then the real-kernel tests
# in the QEMU guest.
test: deps
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

clean:
	rm -rf bin .cache/vm
