# anchorage developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash
GO    ?= go
BIN   ?= bin

.PHONY: help build test demo lint bench-issuance bench-servicedns bench-wellknown bench-propagation bench-fanout bench-smoke envtest-assets

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## Build every binary into ./bin.
	$(GO) build -o $(BIN)/ ./cmd/...

test: ## Run all tests against real kube-apiservers (builds them once, ~6 min, then cached).
	hack/test.sh

demo: ## Run the sandbox: a hub and two member clusters on this machine, ending in cross-cluster mTLS.
	$(GO) run ./cmd/sandbox

lint: ## go vet (main and hack modules) and gofmt.
	$(GO) vet ./...
	cd hack/bench && $(GO) vet ./...
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [[ -n "$$out" ]]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

envtest-assets: ## Build kube-apiserver and etcd v1.37.1 from the Go module proxy and print their folder.
	@hack/envtest-assets.sh

bench-issuance: ## Issuance: anchorage vs the apiserver's ceiling vs Kubernetes' test signer (N=1000, medians of 9 runs).
	cd hack/bench && $(GO) run ./issuance -n 1000 -runs 9

bench-smoke: ## A short run of every benchmark (CI checks they work; figures come from the full runs).
	cd hack/bench && $(GO) run ./issuance -n 50 -runs 1 && $(GO) run ./servicedns -sizes 10,100 -runs 1 && $(GO) run ./wellknown -duration 1s -runs 1 \
		&& $(GO) run ./wellknown -duration 1s -runs 1 -load wrk -pin \
		&& $(GO) run ./propagation -changes 4 -members 2 && $(GO) run ./fanout -members 50 -changes 2

bench-wellknown: ## Well-known endpoint throughput and p99 at 64 clients, beside go-spiffe's bundle endpoint handler: wrk on its own core (needs Debian's wrk), then in-process clients.
	cd hack/bench && $(GO) run ./wellknown -clients 64 -duration 5s -runs 7 -load wrk -pin && $(GO) run ./wellknown -clients 64 -duration 5s -runs 5

bench-propagation: ## Anchor change in one member to the bundle updated in every other member, p50/p99 over 50 changes.
	cd hack/bench && $(GO) run ./propagation -changes 50 -members 3

bench-fanout: ## 1,000 simulated members long-polling one hub: time for a change to reach all, hub RSS.
	cd hack/bench && $(GO) run ./fanout -members 1000 -changes 5

bench-servicedns: ## service-dns lookup cost with 10, 1,000 and 10,000 Services (medians of 5 runs).
	cd hack/bench && $(GO) run ./servicedns -sizes 10,1000,10000 -runs 5

.PHONY: generate verify-generate

generate: ## Regenerate pkg/apis deepcopy code and the hub CRDs (controller-gen pinned in hack/tools).
	hack/generate.sh

verify-generate: ## Fail with a diff if the generated code or CRDs are stale.
	hack/verify-generate.sh

# Container images (build/Dockerfile, one target per binary). This machine
# may have no container engine: `make image-binaries` builds the same
# static binaries with the same flags, without one.
IMAGE_REPO     ?= ghcr.io/anchorage-dev/anchorage
IMAGE_TAG      ?= dev
CONTAINER_TOOL ?= docker
IMAGE_BINARIES := hub member-agent demo-workload

.PHONY: images image-binaries image-tool $(addprefix image-,$(IMAGE_BINARIES))

images: $(addprefix image-,$(IMAGE_BINARIES)) ## Build the hub, member-agent and demo-workload images: ghcr.io/anchorage-dev/anchorage/<name>:dev (IMAGE_REPO, IMAGE_TAG; CONTAINER_TOOL=podman).

$(addprefix image-,$(IMAGE_BINARIES)): image-%: image-tool
	$(CONTAINER_TOOL) build -f build/Dockerfile --target $* -t $(IMAGE_REPO)/$*:$(IMAGE_TAG) .

image-tool:
	@command -v $(CONTAINER_TOOL) >/dev/null 2>&1 || { echo "images: $(CONTAINER_TOOL) is not installed: install Docker, or Podman and run with CONTAINER_TOOL=podman" >&2; exit 1; }
	@$(CONTAINER_TOOL) info >/dev/null 2>&1 || { echo "images: $(CONTAINER_TOOL) is installed but cannot reach its engine ('$(CONTAINER_TOOL) info' fails): start it, or set CONTAINER_TOOL=podman" >&2; exit 1; }

image-binaries: ## Build the images' static binaries (CGO_ENABLED=0, -trimpath, -s -w) into ./bin; build/Dockerfile runs this.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN)/ $(addprefix ./cmd/,$(IMAGE_BINARIES))
