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

# The proxy is measured as it ships: a static musl binary (no shared libraries to map, so a smaller
# resident set) with mimalloc. Without the musl target (or musl-gcc, which mimalloc's C code needs)
# the bench falls back to the host's glibc build and says so in the report.
MUSL=x86_64-unknown-linux-musl
if ! command -v musl-gcc >/dev/null; then
    apt-get install -y musl-tools >/dev/null 2>&1 || true
fi
if command -v musl-gcc >/dev/null && { rustup target list --installed 2>/dev/null | grep -qx $MUSL || rustup target add $MUSL; }; then
    "$CARGO" build --release --target $MUSL -p trellis-proxy
    proxy=target/$MUSL/release/trellis-proxy
    build="release build, static $MUSL, mimalloc"
    # The code layout proxy/build.rs links in (lld with proxy/layout/symbol-order.txt): how much of
    # the recorded list the binary still has (a low count means the list is stale: make proxy-layout).
    order=proxy/layout/symbol-order.txt
    if [[ -f $order ]] && readelf -p .comment "$proxy" 2>/dev/null | grep -q LLD; then
        placed=$(nm "$proxy" | awk '{ print $NF }' | sort -u | comm -12 - <(sort -u "$order") | wc -l)
        build="$build, code layout: $placed of $(wc -l <"$order") recorded functions first"
    else
        build="$build, default code layout"
    fi
else
    echo "bench-proxy: no musl toolchain; measuring the glibc build"
    "$CARGO" build --release -p trellis-proxy
    proxy=target/release/trellis-proxy
    build="release build, glibc (dynamic), mimalloc"
fi
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
