# caddy-realtime: build, run, test and benchmark.
#
#   make run     build Caddy with the module and start the demo on :8080
#   make test    everything CI runs (installs redis-server, Chromium and
#                node when missing)
#   make fuzz    each fuzz target for FUZZTIME (default 30s)
#   make bench   benchmarks, printed as ratios to a baseline of the same run

GO        ?= go
BIN       := bin
CADDY     := $(BIN)/caddy
GOFLAGS   ?=
export GOFLAGS

.PHONY: all build run test test-loaded lint fuzz bench clean xcaddy-check

all: build

build: $(CADDY)

$(CADDY): FORCE
	@mkdir -p $(BIN)
	$(GO) build -o $(CADDY) ./cmd/caddy

FORCE:

run: build
	@echo "Open http://127.0.0.1:8080 (loopback only) and publish from the page; or subscribe in one shell, publish from another:"
	@echo "  curl -N -H 'Accept: text/event-stream' 'http://127.0.0.1:8080/hub?channel=news'"
	@echo "  curl -X POST -H 'Authorization: Bearer demo-key' 'http://127.0.0.1:8080/hub?channel=news' -d hello"
	@echo "Embedded broker; with REDIS_URL=redis://127.0.0.1:6379 set: redis-cli PUBLISH realtime:news hello"
	$(CADDY) run --config examples/demo/Caddyfile --adapter caddyfile

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# test: install what is missing, lint, then every Go test with the race
# detector (unit tests, the fuzz targets' seed corpora, and integration
# tests that run the Caddy binary built here), the browser client's tests
# in Debian's Chromium, and the plugin build check. About 4 minutes warm
# on 2 cores; fuzzing proper is `make fuzz`.
test: build
	./scripts/ensure-deps.sh
	$(MAKE) --no-print-directory lint
	REALTIME_CADDY_BIN=$(abspath $(CADDY)) $(GO) test -race -count=1 -timeout 9m ./...
	REALTIME_CADDY_BIN=$(abspath $(CADDY)) ./client/test/run.sh
	./scripts/xcaddy-check.sh

# test-loaded: `make test` RUNS times in a row (default 10) with a busy
# loop per core beside it, stopping at the first failure.
RUNS ?= 10
test-loaded:
	./scripts/test-under-load.sh $(RUNS)

# xcaddy-check: the module builds into Caddy the way users add plugins.
xcaddy-check:
	./scripts/xcaddy-check.sh

# fuzz: each fuzz target for FUZZTIME (default 30s), one after another:
# 13 targets, about 9 minutes with the default. Failing inputs are saved
# under the package's testdata/fuzz/ and then run by `make test`.
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    out=$$($(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg 2>&1) || { echo "$$out" | tail -30; exit 1; }; \
	  done; \
	done

bench: build
	./scripts/ensure-deps.sh
	$(GO) test -run '^$$' -bench . -benchmem ./sse/ ./internal/hub/ ./internal/stream/ ./replay/ ./internal/broker/
	REALTIME_CADDY_BIN=$(abspath $(CADDY)) $(GO) run ./bench

clean:
	rm -rf $(BIN)
