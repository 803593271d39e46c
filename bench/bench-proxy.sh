#!/usr/bin/env bash
# `make bench-proxy`: builds the proxy and the bench in release mode, installs the load generator and
# HAProxy if missing, and runs the bench driver (target/release/trellis-bench: direct, Trellis and
# HAProxy pairs in plain text and with mutual TLS; `--setups` picks some), which writes
# bench/results/proxy.md and bench/results/proxy.svg. Extra arguments go to the driver
# (`target/release/trellis-bench --help`). Every process the bench starts is stopped on exit,
# including on Ctrl-C: the driver runs in its own process group, which the trap ends.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
TOOLS=bench/.tools
OHA_VERSION=1.16.0

started=$(date +%s)

if [[ ! -x $TOOLS/bin/oha ]]; then
    echo "bench-proxy: installing oha $OHA_VERSION into $TOOLS (once; takes a few minutes)"
    "$CARGO" install oha --version "$OHA_VERSION" --locked --root "$TOOLS"
fi
if ! command -v haproxy >/dev/null; then
    echo "bench-proxy: installing haproxy"
    apt-get install -y haproxy || { apt-get update && apt-get install -y haproxy; }
fi

# The proxy is measured as it ships (bench/proxy-build.sh: static musl build, mimalloc, recorded code
# layout and profile), or as the glibc build when the musl toolchain is missing, which the report says.
# shellcheck source=bench/proxy-build.sh
source bench/proxy-build.sh
build_shipped_proxy
"$CARGO" build --release -p trellis-bench

driver=
cleanup() {
    if [[ -n $driver ]]; then
        # The driver leads its own process group (setsid): end it and everything it started.
        kill -TERM -- "-$driver" 2>/dev/null || true
        wait "$driver" 2>/dev/null || true
        driver=
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP

setsid target/release/trellis-bench --proxy "$proxy" --proxy-build "$build" "$@" &
driver=$!
status=0
wait "$driver" || status=$?
driver=
echo "bench-proxy: finished in $(( $(date +%s) - started )) s (exit $status)"
exit "$status"
