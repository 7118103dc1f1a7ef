# Rampart: build, test and demo. Every tool the targets need is installed
# by the targets themselves on a fresh Debian machine with Go.

GO        ?= go
BIN       := bin
CACHE     := .cache
TOOLS_BIN := $(abspath $(CACHE)/bin)
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PKGS      := ./...

export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: all build demo test test-unit lint vet fmt-check generate check-generated bench bench-go deps-test deps-generate clean

all: build

## build: compile rampart, rampart-controller and rampart-proxy into ./bin
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## demo: build everything and run the three-service demo (Ctrl-C stops it)
demo: build
	$(BIN)/rampart demo --bin-dir $(BIN)

# As root (as in CI), the network-namespace tests must run: a missing tool
# fails them instead of skipping them.
REQUIRE_NETNS := $(shell [ "$$(id -u)" = 0 ] && echo 1)

## test: lint, then every test with the race detector (end-to-end included)
test: deps-test lint build
	RAMPART_BIN_DIR=$(abspath $(BIN)) RAMPART_REQUIRE_NETNS=$(REQUIRE_NETNS) \
		$(GO) test -race -count=1 -timeout 20m $(PKGS)

## test-unit: the fast tests only
test-unit:
	$(GO) test -short -count=1 $(PKGS)

lint: fmt-check vet

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './$(CACHE)/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

## bench: the data plane side by side with a direct connection, nginx and HAProxy
## (bench/README.md); writes bench/results.json
bench: build
	bash bench/setup.sh
	$(GO) run ./bench/sidecars -bin-dir $(abspath $(BIN)) -out bench/results.json

## bench-go: the Go benchmarks, reported by go test
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## generate: regenerate protobuf code (committed) from internal/**/*.proto,
## then the CRDs and deep-copy code from api/v1alpha1 (generate-crds)
generate: deps-generate generate-crds
	for f in $$(git ls-files '*.proto'); do \
		d=$$(dirname $$f); \
		protoc -I $$d -I /usr/include --go_out=$$d --go_opt=paths=source_relative \
			--go-grpc_out=$$d --go-grpc_opt=paths=source_relative $$f || exit 1; \
	done

## check-generated: fail if generated code differs from its sources
check-generated: generate
	git diff --exit-code -- '*.pb.go' '*/zz_generated.deepcopy.go' deploy/crds
	@untracked=$$(git ls-files --others --exclude-standard -- deploy/crds); \
	if [ -n "$$untracked" ]; then echo "generated but not committed:"; echo "$$untracked"; exit 1; fi

## generate-crds: regenerate the CRDs in deploy/crds (one file per kind) and
## api/v1alpha1/zz_generated.deepcopy.go with controller-gen (a tool in go.mod)
.PHONY: generate-crds
generate-crds:
	rm -f deploy/crds/rampart.dev_*.yaml
	$(GO) tool controller-gen object paths=./api/v1alpha1/... \
		crd:crdVersions=v1 output:crd:artifacts:config=deploy/crds

# The race detector needs a C toolchain; the end-to-end tests need
# iproute2, iptables, Redis, h2spec and the gRPC interop binaries.
deps-test:
	@bash scripts/test-deps.sh

deps-generate:
	@command -v protoc >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq protobuf-compiler; }
	@GOBIN=$(TOOLS_BIN) $(GO) install tool

## k8s-test-env: build etcd and Kubernetes from Go modules and start a test
## cluster on loopback in .cache/k8s-env (docs/kubernetes.md, "Test cluster")
K8S_TEST_ENV_DIR := $(CACHE)/k8s-env
.PHONY: k8s-test-env k8s-test-env-stop
k8s-test-env:
	GO=$(GO) bash scripts/k8s-test-env.sh build
	bash scripts/k8s-test-env.sh start $(K8S_TEST_ENV_DIR)

## k8s-test-env-stop: stop the test cluster started by k8s-test-env
k8s-test-env-stop:
	bash scripts/k8s-test-env.sh stop $(K8S_TEST_ENV_DIR)

clean:
	rm -rf $(BIN)
