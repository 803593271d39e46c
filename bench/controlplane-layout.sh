#!/usr/bin/env bash
# `make controlplane-layout`: records which functions trellisd runs, hottest first, into
# controlplane/layout/symbol-order.txt, the order controlplane/build.rs links the release build in (so
# the code trellisd runs sits together and maps in as few pages as possible). It runs trellisd under
# valgrind's callgrind as the control-plane bench drives it, at a scale callgrind finishes in a few
# minutes: start (reading the folder, indexing, listening, the mesh CA), the simulated proxies
# connecting over the push API and acking their snapshots, endpoint and VirtualService changes in the
# folder (namespace-local and mesh-wide), idle folder polling, and the stop on SIGTERM. Re-run it after
# a toolchain or dependency upgrade (symbol names change).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
ORDER=controlplane/layout/symbol-order.txt
# The bench driver's scale under callgrind (the bench itself: 1,000 proxies, 1,000 services).
SCALE=(--proxies 40 --services 40 --namespaces 4 --endpoints 3 --shared-every 5 --rounds 2)

command -v valgrind >/dev/null || apt-get install -y valgrind
# The binary as it ships (the layout is recorded for the static musl build: symbol names differ per target).
# shellcheck source=bench/controlplane-build.sh
source bench/controlplane-build.sh
build_shipped_trellisd
[[ $trellisd == */$MUSL/* ]] || { echo "controlplane-layout: the layout is recorded for the musl build (install musl-tools)" >&2; exit 1; }
"$CARGO" build --release -p trellis-bench --bin trellis-bench-controlplane
trellisd=$(realpath "$trellisd")
out=$(mktemp -d)  # KEEP=1 keeps it (the callgrind profile, trellisd's log, the driver's report)
vg=
trap '[[ -n $vg ]] && kill "$vg" 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$out"' EXIT

# The driver kills trellisd with SIGKILL when done, which would lose the profile: it starts this
# wrapper instead, which runs trellisd under callgrind in the background (surviving the wrapper) and
# waits for it; the profile is written once trellisd stops on the SIGTERM sent below. trellisd's
# allocator setting is set here, or trellisd would exec itself to set it (leaving callgrind behind);
# the driver's `trellisd --version` runs natively.
cat >"$out/trellisd" <<WRAPPER
#!/usr/bin/env bash
[[ \${1:-} == --version ]] && exec "$trellisd" "\$@"
MIMALLOC_PURGE_DELAY=0 bash "$PWD/bench/layout.sh" callgrind "$out/trellisd.cg" "$trellisd" "\$@" &
echo \$! >"$out/valgrind.pid"
wait \$!
WRAPPER
chmod +x "$out/trellisd"

"$TARGET_DIR/release/trellis-bench-controlplane" --trellisd "$out/trellisd" --trellisd-build "release build under callgrind" \
    "${SCALE[@]}" --out "$out/report.md" | tail -n 3
vg=$(cat "$out/valgrind.pid")
kill -TERM "$vg"
for _ in $(seq 240); do kill -0 "$vg" 2>/dev/null || break; sleep 0.5; done
kill -0 "$vg" 2>/dev/null && { echo "controlplane-layout: trellisd did not stop on SIGTERM" >&2; exit 1; }
vg=
[[ -s $out/trellisd.cg ]] || { echo "controlplane-layout: no callgrind profile (see $out)" >&2; exit 1; }

# The functions the run saw, hottest first (bench/layout.sh order), after what callgrind cannot name
# or sees too rarely: the program's entry, the slow paths of parking_lot's locks (valgrind runs one
# thread at a time, so they rarely contend) and the compiler's 128-bit arithmetic helpers. (The C
# library is linked in statically, so the functions of it that run are in the layout too.) A function
# left out costs a fault-around window (up to 64 KiB) of resident code, so a cheap guess is better
# than a miss.
mkdir -p "$(dirname "$ORDER")"
{
    printf '%s\n' _start main
    nm "$trellisd" | awk '{ print $NF }' | grep -E 'parking_lot.*(lock|unlock|park)[a-z_]*slow|compiler_builtins.*div_rem|^__(u?divti3|u?modti3|floatuntidf|floattidf)$' || true
    bash bench/layout.sh order "$out/trellisd.cg"
} | awk '!seen[$0]++' >"$ORDER"
echo "controlplane-layout: wrote $ORDER ($(wc -l <"$ORDER") functions)"
