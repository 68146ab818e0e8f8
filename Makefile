# Sutra Grid — the README's commands.
#   make demo   run a local master + agents fleet on embedded defaults
#   make test   vet, race-enabled tests, proto drift check, cross-compile
#   make bench  benchmarks against named baselines
#   make fuzz   every fuzz target for FUZZTIME (default 20s) each

SHELL        := /bin/bash
GO           ?= go
VERSION      ?= 0.1.0
MODULE       := github.com/sutragrid/sutra
LDFLAGS      := -s -w -X $(MODULE)/internal/version.Version=$(VERSION)
BIN          := bin
CMDS         := sutra-master sutra-agent sutra storage-server
TARGETS      := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
TOOLS        := $(CURDIR)/.tools

.PHONY: all build demo test vet unit cross proto proto-check bench fuzz clean dist-binaries release-check snapshot

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# The demo runs as its own binary (not `go run`, which turns a Ctrl-C into
# exit status 1): Ctrl-C stops the grid and ends the demo with status 0.
demo: build
	$(GO) build -o $(BIN)/ ./cmd/sutra-demo
	@$(BIN)/sutra-demo

test: vet unit cross

vet:
	$(GO) vet ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit"; $(GO) mod tidy -diff; exit 1; }
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

cross:
	@set -e; for t in $(TARGETS); do \
	  os=$${t%/*}; arch=$${t#*/}; echo "cross-compile $$os/$$arch"; \
	  GOOS=$$os GOARCH=$$arch CGO_ENABLED=0 $(GO) build -o /dev/null ./...; \
	done

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO_GRPC)

proto: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler"; exit 1; }
	PATH=$(TOOLS):$$PATH protoc -I proto \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	  proto/grid/v1/*.proto

# Regenerates the protobuf code and fails when it differs from what is committed.
proto-check: proto
	@git diff --exit-code -- proto/ || { echo "generated protobuf code is stale: run 'make proto' and commit"; exit 1; }

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bash bench/serve.sh
	bash bench/fetch.sh
	$(GO) run ./bench/agentbench
	$(GO) run ./bench/fleet -n 1000
	$(GO) run ./bench/fleet -n 10000

# The chaos soak (bench/chaos, issue 17): the real grid under seeded faults
# while clients write; prints a table per fault kind and last
# "chaos: F faults, W writes, 0 lost, 0 duplicates, 0 orphans, converged p99 X s".
# DURATION (default 30m), SEED (default random, printed first), HA=1 (or yes, true) for three
# masters on three etcd members, OUT=dir to keep every log there.
DURATION ?= 30m
SEED     ?=
HA       ?=
OUT      ?=
.PHONY: chaos
chaos:
	$(GO) run ./bench/chaos -duration $(DURATION)$(if $(SEED), -seed $(SEED))$(if $(filter 1 yes true,$(HA)), -ha)$(if $(OUT), -out $(OUT))

# Every Fuzz* target in the repository, FUZZTIME each (their seed corpora
# also run in `make test`). A crasher is saved under the package's
# testdata/fuzz/ and fails the run; FUZZ=regexp picks targets by name.
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded"
# when -fuzztime ends under CPU contention (golang/go#75804, fixed in Go
# 1.27): such a run, with no failing input written, counts as a pass.
FUZZTIME         ?= 20s
FUZZMINIMIZETIME ?= 2s
FUZZ             ?= .
fuzz:
	@set -euo pipefail; out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	dirs=$$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./\.tools/' | xargs -n1 dirname | sort -u); \
	for d in $$dirs; do \
	  list=$$($(GO) test -list '^Fuzz' "$$d"); \
	  for t in $$(echo "$$list" | grep '^Fuzz' | grep -E -- '$(FUZZ)' || true); do \
	    echo "fuzz $$d $$t ($(FUZZTIME))"; \
	    if ! $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) "$$d" 2>&1 | tee "$$out"; then \
	      if grep -q '^    context deadline exceeded$$' "$$out" && ! grep -q 'Failing input written to' "$$out"; then \
	        echo "fuzz $$d $$t: stopped by golang/go#75804 at the end of -fuzztime, no failing input: pass"; \
	      else exit 1; fi; \
	    fi; \
	  done; \
	done

# storage-server-{version}-{platform}-{arch} and sutra-agent-… for every
# platform, ready to drop into a master's BINARIES_DIR (OUT=dir to override).
# With SUTRA_SIGNING_KEY=path/to/sutra-release.key every binary gets NAME.minisig.
dist-binaries:
	bash packaging/dist-binaries.sh $(VERSION) $(or $(OUT),dist/binaries)

GORELEASER := github.com/goreleaser/goreleaser/v2@v2.15.1

# Validates goreleaser.yaml; `make snapshot` builds a local release in dist/.
release-check:
	$(GO) run $(GORELEASER) check

# Without SUTRA_SIGNING_KEY the snapshot's binaries are not signed (--skip=sign).
snapshot:
	$(GO) run $(GORELEASER) release --snapshot --clean $(if $(SUTRA_SIGNING_KEY),,--skip=sign)

clean:
	rm -rf $(BIN) $(TOOLS) dist demo
