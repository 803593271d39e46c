# Trellis developer commands. `make test` is what CI runs.
CARGO ?= cargo

.PHONY: build test fmt fmt-check lint clippy crds crds-check analyze-examples clean demo

build:
	$(CARGO) build --workspace --all-targets

## test: formatting, lints, CRDs up to date, every test, and the tutorial examples analyze clean.
test: fmt-check clippy crds-check
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	$(MAKE) analyze-examples

## demo: the tutorial's ordering app on this machine (local mode, no root): builds the release binaries and
## runs `trellis demo`; Ctrl-C stops it. `target/release/trellis demo --once` runs the script and exits.
demo:
	$(CARGO) build --release -p trellis-cli -p trellis-proxy -p trellis-controlplane -p trellis-ordering
	"$${CARGO_TARGET_DIR:-target}/release/trellis" demo

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

## lint: clippy with warnings denied (what CI enforces).
lint: clippy
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## crds: regenerate crds/*.yaml from the Rust types in api/.
crds:
	$(CARGO) run -q -p trellis-api --bin crdgen -- crds

## crds-check: fail if crds/ differs from what the Rust types generate.
crds-check:
	$(CARGO) run -q -p trellis-api --bin crdgen -- --check crds

analyze-examples:
	$(CARGO) run -q -p trellis-cli -- analyze examples/tutorial examples/mesh examples/ratelimit

clean:
	$(CARGO) clean

## bench: every benchmark, one after the other; each writes its Markdown table under bench/results/.
.PHONY: bench
bench: bench-proxy bench-controlplane bench-webhook

## bench-proxy: latency, CPU and memory of Trellis proxy pairs vs direct vs HAProxy pairs (plain text and mutual TLS), in one
## run on this machine; writes bench/results/proxy.md and bench/results/proxy.svg (~12 minutes). Extra driver flags:
## ARGS="--setups trellis,trellis-resilient --rates 1000 --rounds 9 --seconds 45 --out bench/results/resilience".
.PHONY: bench-proxy
bench-proxy:
	CARGO="$(CARGO)" bash bench/bench-proxy.sh $(ARGS)

## proxy-release: builds the proxy as it ships (static musl release build with mimalloc, the recorded code
## layout and profile; bench/proxy-build.sh) and prints its path.
.PHONY: proxy-release
proxy-release:
	@CARGO="$(CARGO)" bash -c 'set -euo pipefail; source bench/proxy-build.sh; build_shipped_proxy >&2; echo "$$proxy ($$build)"'

## proxy-pgo: records the profile the shipped proxy is optimized with (an instrumented build under the bench's
## pairs) into proxy/pgo/trellis-proxy.proftext. Needs a previous `make bench-proxy`; re-run after changes to the
## request path or a toolchain upgrade, then `make proxy-layout`.
.PHONY: proxy-pgo
proxy-pgo:
	CARGO="$(CARGO)" bash bench/proxy-pgo.sh

## proxy-layout: records the functions the proxy runs (callgrind over the bench's pairs) into
## proxy/layout/symbol-order.txt, the code layout of the musl release build (see proxy/build.rs). Needs a
## previous `make bench-proxy`; re-run after a toolchain or dependency upgrade.
.PHONY: proxy-layout
proxy-layout:
	CARGO="$(CARGO)" bash bench/proxy-layout.sh

## controlplane-release: builds trellisd as it ships (static musl release build with mimalloc and the
## recorded code layout; bench/controlplane-build.sh) and prints its path.
.PHONY: controlplane-release
controlplane-release:
	@CARGO="$(CARGO)" bash -c 'set -euo pipefail; source bench/controlplane-build.sh; build_shipped_trellisd >&2; echo "$$trellisd ($$trellisd_build)"'

## controlplane-layout: records the functions trellisd runs (callgrind over a small control-plane bench)
## into controlplane/layout/symbol-order.txt, the code layout of the musl release build (see
## controlplane/build.rs); re-run after a toolchain or dependency upgrade.
.PHONY: controlplane-layout
controlplane-layout:
	CARGO="$(CARGO)" bash bench/controlplane-layout.sh

## bench-controlplane: trellisd pushing changes to 1,000 simulated proxies (1,000 services, 10,000
## endpoints): change-to-ack p50/p99, bytes per change, peak RSS and CPU; writes
## bench/results/controlplane.md (~3 minutes after the build).
.PHONY: bench-controlplane
bench-controlplane:
	CARGO="$(CARGO)" bash bench/bench-controlplane.sh

## bench-webhook: admission latency of trellis-webhook over HTTPS at 100 requests per second (p50/p90/p99/max,
## target p99 < 5 ms); writes bench/results/webhook.md (~35 s after the build). Extra driver flags: ARGS="--seconds 60".
.PHONY: bench-webhook
bench-webhook:
	$(CARGO) build --release -p trellis-webhook --bin trellis-webhook --example bench_webhook
	"$${CARGO_TARGET_DIR:-target}/release/examples/bench_webhook" --binary "$${CARGO_TARGET_DIR:-target}/release/trellis-webhook" $(ARGS)
