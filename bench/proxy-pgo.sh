#!/usr/bin/env bash
# `make proxy-pgo`: records the profile the shipped proxy is optimized with (profile-guided
# optimization) into proxy/pgo/trellis-proxy.proftext. It builds an instrumented musl release binary
# (in its own target folder, so the normal build stays cached), runs the bench's plain, mTLS and
# resilience pairs natively as the bench drives them (start polled with one-shot requests, 1,000 rps
# over 16 and over 64 connections, unthrottled load, the admin and Prometheus endpoints, drain), and
# merges what the six processes counted (functions never run are left out). The bench and
# `make proxy-layout` build with it (bench/proxy-build.sh). Needs the bench's generated configs (run
# `make bench-proxy` once first). Re-run it after changes to the request path or a toolchain
# upgrade (functions whose code changed lose their profile), then `make proxy-layout`.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
RATES=$TARGET_DIR/bench-proxy/rates
PKI=$TARGET_DIR/bench-proxy/pki
OHA=bench/.tools/bin/oha
APP=127.90.0.1:8080

# shellcheck source=bench/proxy-build.sh
source bench/proxy-build.sh
[[ -f $RATES/trellis-client.json && -x $OHA ]] || { echo "proxy-pgo: run 'make bench-proxy' once first (it writes $RATES and installs oha)" >&2; exit 1; }
tool=$(llvm_profdata) || { echo "proxy-pgo: needs llvm-profdata (rustup component add llvm-tools)" >&2; exit 1; }

out=$(mktemp -d)  # KEEP=1 keeps it (the raw profiles and the proxies' logs)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$out"' EXIT

# The instrumented build: no recorded layout (its symbols are not the shipped binary's). Its flags
# stay the same from run to run (so a second run only rebuilds what changed): where the counts go is
# told at run time.
generate_dir=$TARGET_DIR/pgo-generate
CARGO_TARGET_DIR=$generate_dir TRELLIS_PROXY_NO_LAYOUT=1 RUSTFLAGS="-Cprofile-generate" \
    "$CARGO" build --release --target "$MUSL" -p trellis-proxy
# %m: one file per binary, which every process merges into.
export LLVM_PROFILE_FILE=$out/raw/proxy-%m.profraw
"$CARGO" build --release -p trellis-bench --bin trellis-bench-app
proxy=$generate_dir/$MUSL/release/trellis-proxy

"$TARGET_DIR/release/trellis-bench-app" --listen $APP --threads 1 >"$out/app.log" 2>&1 &
pids+=($!)

common() { echo --listen-ip "$1" --admin-addr "$1:15000" --readiness-addr "$1:15021" --prometheus-addr "$1:15090" --concurrency 2 --drain-deadline 1s --log warn; }

# pair NAME CLIENT_CONFIG SERVER_CONFIG CLIENT_IP SERVER_IP [CLIENT_TLS_ARGS] [SERVER_TLS_ARGS]
pair() {
    local name=$1 cip=$4 sip=$5
    # shellcheck disable=SC2046,SC2086
    "$proxy" sidecar --config "$RATES/$3" $(common "$sip") --inbound-target $APP ${7:-} >"$out/$name-server.log" 2>&1 &
    local server=$!
    # shellcheck disable=SC2046,SC2086
    "$proxy" gateway --config "$RATES/$2" $(common "$cip") ${6:-} >"$out/$name-client.log" 2>&1 &
    local client=$!
    pids+=("$server" "$client")
    # As the bench starts a pair: one-shot requests (Connection: close) until one is answered 200.
    for _ in $(seq 200); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Connection: close' "http://$cip:8080/") == 200 ]] && break
        sleep 0.05
    done
    curl -sf -o /dev/null "http://$cip:15021/healthz/ready" && curl -sf -o /dev/null "http://$sip:15021/healthz/ready" ||
        { echo "proxy-pgo: the $name pair did not become ready (logs: $out/$name-*.log)" >&2; exit 1; }
    "$OHA" -q 1000 --latency-correction -z 4s -c 16 --no-tui "http://$cip:8080/" | grep 'Success rate'
    "$OHA" -q 1000 --latency-correction -z 2s -c 64 --no-tui "http://$cip:8080/" | grep 'Success rate'
    "$OHA" -z 3s -c 16 --no-tui "http://$cip:8080/" | grep 'Success rate'
    for ip in $cip $sip; do
        curl -s -o /dev/null "http://$ip:15000/config_dump"
        curl -s -o /dev/null "http://$ip:15090/stats/prometheus"
    done
    # The counts are written when a process exits: drain, not kill.
    kill -TERM "$client" "$server"
    wait "$client" "$server" || true
}

tls() { echo --tls-cert "$PKI/$1.pem" --tls-key "$PKI/$1-key.pem" --tls-roots "$PKI/roots.pem"; }
pair plain trellis-client.json trellis-server.json 127.90.1.1 127.90.1.2
pair mtls trellis-mtls-client.json trellis-mtls-server.json 127.90.1.5 127.90.1.6 "$(tls client)" "$(tls app)"
pair resilient trellis-resilient-client.json trellis-resilient-server.json 127.90.1.9 127.90.1.10

mkdir -p "$(dirname "$PGO_PROFILE")"
"$tool" merge --sparse --text -o "$PGO_PROFILE" "$out"/raw/*.profraw
echo "proxy-pgo: wrote $PGO_PROFILE ($(grep -c '^# Func Hash' "$PGO_PROFILE") functions)"
