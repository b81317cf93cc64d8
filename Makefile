# caddy-realtime: build, run, test and benchmark.
#
#   make run     build Caddy with the module and start the demo on :8080
#   make test    everything CI runs (installs redis-server when missing)
#   make bench   benchmarks, printed as ratios to a baseline of the same run

GO        ?= go
BIN       := bin
CADDY     := $(BIN)/caddy
GOFLAGS   ?=
export GOFLAGS

.PHONY: all build run test unit lint fuzz bench clean xcaddy-check

all: build

build: $(CADDY)

$(CADDY): FORCE
	@mkdir -p $(BIN)
	$(GO) build -o $(CADDY) ./cmd/caddy

FORCE:

run: build
	@echo "Open http://localhost:8080 and publish from the page, or from a shell:"
	@echo "  curl -X POST -H 'Authorization: Bearer demo-key' 'http://localhost:8080/hub?channel=news' -d hello"
	@echo "  curl -N -H 'Accept: text/event-stream' 'http://localhost:8080/hub?channel=news'"
	@echo "Embedded broker; with REDIS_URL=redis://127.0.0.1:6379 set: redis-cli PUBLISH realtime:news hello"
	$(CADDY) run --config examples/demo/Caddyfile --adapter caddyfile

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# test: install missing services, lint, then every Go test with the race
# detector (the integration tests run the Caddy binary built here), the
# browser client's tests in Debian's Chromium, and each fuzz target
# briefly.
test: build
	./scripts/ensure-deps.sh
	$(MAKE) --no-print-directory lint
	REALTIME_CADDY_BIN=$(abspath $(CADDY)) $(GO) test -race -count=1 -timeout 9m ./...
	REALTIME_CADDY_BIN=$(abspath $(CADDY)) ./client/test/run.sh
	$(MAKE) --no-print-directory fuzz FUZZTIME=3s
	./scripts/xcaddy-check.sh

# xcaddy-check: the module builds into Caddy the way users add plugins.
xcaddy-check:
	./scripts/xcaddy-check.sh

# fuzz: each fuzz target for FUZZTIME (default 30s); bounded.
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null || exit 1; \
	  done; \
	done

bench: build
	./scripts/ensure-deps.sh
	$(GO) test -run '^$$' -bench . -benchmem ./sse/ ./hub/ ./replay/ ./broker/
	REALTIME_CADDY_BIN=$(abspath $(CADDY)) $(GO) run ./bench

clean:
	rm -rf $(BIN)
