#!/usr/bin/env bash
# `make bench-controlplane`: builds trellisd as it ships and the bench driver in release mode and runs the driver
# (target/release/trellis-bench-controlplane), which generates a folder of YAML (1,000 ServiceEntries,
# 10,000 WorkloadEntries, VirtualServices), starts trellisd on it, connects 1,000 simulated proxies
# over the push API, makes changes in the folder and writes bench/results/controlplane.md. Extra
# arguments go to the driver (`target/release/trellis-bench-controlplane --help`). trellisd is stopped
# on exit, including on Ctrl-C: the driver runs in its own process group, which the trap ends.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
started=$(date +%s)

# trellisd is measured as it ships (bench/controlplane-build.sh: static musl build, mimalloc, recorded
# code layout).
# shellcheck source=bench/controlplane-build.sh
source bench/controlplane-build.sh
build_shipped_trellisd
"$CARGO" build --release -p trellis-bench --bin trellis-bench-controlplane

driver=
cleanup() {
    if [[ -n $driver ]]; then
        kill -TERM -- "-$driver" 2>/dev/null || true
        wait "$driver" 2>/dev/null || true
        driver=
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP

target=${CARGO_TARGET_DIR:-target}
setsid "$target/release/trellis-bench-controlplane" --trellisd "$trellisd" --trellisd-build "$trellisd_build" "$@" &
driver=$!
status=0
wait "$driver" || status=$?
driver=
echo "bench-controlplane: finished in $(( $(date +%s) - started )) s (exit $status)"
exit "$status"
