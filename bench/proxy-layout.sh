#!/usr/bin/env bash
# `make proxy-layout`: records which functions the proxy runs, hottest first, into
# proxy/layout/symbol-order.txt, the order proxy/build.rs links the musl release build in (so the code
# the proxy runs sits together and maps in as few pages as possible). It runs the bench's plain, mTLS
# and resilience pairs under valgrind's callgrind as the bench drives them: start (the entry polled
# with one-shot requests until the server side answers), config load, 3,000 requests over 16
# connections, 200 over 64, a fixed-rate load over 64, the admin, readiness and Prometheus endpoints,
# drain. Needs valgrind and the bench's generated configs (run `make bench-proxy` once first). Re-run
# it after a toolchain or dependency upgrade (symbol names change; `make bench-proxy` reports how much
# of the list matched), and after `make proxy-pgo` (the profile changes what is inlined).
set -euo pipefail
cd "$(dirname "$0")/.."

MUSL=x86_64-unknown-linux-musl
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
RATES=$TARGET_DIR/bench-proxy/rates
PKI=$TARGET_DIR/bench-proxy/pki
OHA=bench/.tools/bin/oha
ORDER=proxy/layout/symbol-order.txt
APP=127.90.0.1:8080

command -v valgrind >/dev/null || apt-get install -y valgrind
[[ -f $RATES/trellis-client.json && -x $OHA ]] || { echo "proxy-layout: run 'make bench-proxy' once first (it writes $RATES and installs oha)" >&2; exit 1; }
# The binary as it ships (with the recorded profile: profile-guided inlining decides which functions exist).
# shellcheck source=bench/proxy-build.sh
source bench/proxy-build.sh
build_shipped_proxy
[[ $proxy == */$MUSL/* ]] || { echo "proxy-layout: the layout is recorded for the musl build (install musl-tools)" >&2; exit 1; }
"$CARGO" build --release -p trellis-bench --bin trellis-bench-app
out=$(mktemp -d)  # KEEP=1 keeps it (the callgrind profiles and the proxies' logs)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$out"' EXIT

"$TARGET_DIR/release/trellis-bench-app" --listen $APP --threads 1 >"$out/app.log" 2>&1 &
pids+=($!)

common() { echo --listen-ip "$1" --admin-addr "$1:15000" --readiness-addr "$1:15021" --prometheus-addr "$1:15090" --concurrency 2 --drain-deadline 1s --log warn; }
# exec: run in the background, the function's process becomes valgrind (so its pid is the one to stop).
callgrind() { exec bash bench/layout.sh callgrind "$@"; }

# pair NAME CLIENT_CONFIG SERVER_CONFIG CLIENT_IP SERVER_IP [CLIENT_TLS_ARGS] [SERVER_TLS_ARGS]
pair() {
    local name=$1 cip=$4 sip=$5
    # shellcheck disable=SC2046,SC2086
    callgrind "$out/$name-server.cg" "$proxy" sidecar --config "$RATES/$3" $(common "$sip") --inbound-target $APP ${7:-} >"$out/$name-server.log" 2>&1 &
    local server=$!
    # shellcheck disable=SC2046,SC2086
    callgrind "$out/$name-client.cg" "$proxy" gateway --config "$RATES/$2" $(common "$cip") ${6:-} >"$out/$name-client.log" 2>&1 &
    local client=$!
    pids+=("$server" "$client")
    # As the bench starts a pair: one-shot requests (Connection: close) to the client's entry until
    # one is answered 200, so the paths taken while the server proxy is still starting are recorded.
    for _ in $(seq 120); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Connection: close' "http://$cip:8080/") == 200 ]] && break
        sleep 0.5
    done
    for _ in $(seq 120); do
        curl -sf -o /dev/null "http://$cip:15021/healthz/ready" && curl -sf -o /dev/null "http://$sip:15021/healthz/ready" && break
        sleep 0.5
    done
    curl -sf -o /dev/null "http://$cip:15021/healthz/ready" && curl -sf -o /dev/null "http://$sip:15021/healthz/ready" ||
        { echo "proxy-layout: the $name pair did not become ready (logs: $out/$name-*.log)" >&2; exit 1; }
    "$OHA" -n 3000 -c 16 --no-tui "http://$cip:8080/" | grep 'Success rate'
    "$OHA" -n 200 -c 64 --no-tui "http://$cip:8080/" | grep 'Success rate'
    # The bench's fixed-rate runs (coordinated-omission corrected), at a rate callgrind keeps up with.
    "$OHA" -q 100 --latency-correction -z 3s -c 64 --no-tui "http://$cip:8080/" | grep 'Success rate'
    for ip in $cip $sip; do
        curl -s -o /dev/null "http://$ip:15000/config_dump"
        curl -s -o /dev/null "http://$ip:15090/stats/prometheus"
    done
    kill -TERM "$client" "$server"
    wait "$client" "$server" || true
}

tls() { echo --tls-cert "$PKI/$1.pem" --tls-key "$PKI/$1-key.pem" --tls-roots "$PKI/roots.pem"; }
pair plain trellis-client.json trellis-server.json 127.90.1.1 127.90.1.2
pair mtls trellis-mtls-client.json trellis-mtls-server.json 127.90.1.5 127.90.1.6 "$(tls client)" "$(tls app)"
pair resilient trellis-resilient-client.json trellis-resilient-server.json 127.90.1.9 127.90.1.10

# The functions the runs saw, hottest first (bench/layout.sh order).
# Callgrind cannot name everything the proxy runs, so the list starts with:
# - musl's assembly string functions, which carry no symbol size (their cost goes to unnamed code);
# - the slow paths of musl's and parking_lot's locks and waits, which run only when two threads
#   contend (valgrind runs one thread at a time);
# - `__libc_start_main`, which callgrind calls "(below main)", and the few small functions found on
#   the touched pages outside the list when the bench ran natively (128-bit arithmetic the HTTP/2
#   pings' round-trip time uses, musl's mapping and semaphore helpers).
# A function left out costs a fault-around window (up to 64 KiB) of resident code, so a cheap guess
# is better than a miss.
mkdir -p "$(dirname "$ORDER")"
{
    printf '%s\n' memcpy memset memmove __pthread_mutex_timedlock __pthread_mutex_trylock_owner __timedwait_cp \
        __timedwait __wait __libc_start_main __vm_lock __vm_unlock sem_post sem_wait sem_timedwait getpid \
        strcmp __floattidf __floatuntidf __divti3 __udivti3 __umodti3 __powidf2
    nm "$proxy" | awk '{ print $NF }' | grep -E 'parking_lot.*(lock|unlock|park)[a-z_]*slow|compiler_builtins.*div_rem' || true
    bash bench/layout.sh order "$out"/*.cg
} | awk '!seen[$0]++' >"$ORDER"
echo "proxy-layout: wrote $ORDER ($(wc -l <"$ORDER") functions)"
