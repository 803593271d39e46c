#!/usr/bin/env bash
# Sourced by the scripts that build trellisd as it ships (bench/bench-controlplane.sh,
# bench/controlplane-layout.sh, `make controlplane-release`): `build_shipped_trellisd` builds it and sets
#   trellisd        the binary's path;
#   trellisd_build  how it was built, for reports.
# The shipped build is the static musl release build with mimalloc, linked in the recorded code layout
# (controlplane/build.rs). Static, it maps no shared libraries: the glibc build's C library, libm,
# loader and libgcc_s were ~2.1 MiB of trellisd's resident set in the control-plane bench. Without the
# musl target (or musl-gcc) it falls back to the host's glibc build and says so.
#
# Expects: CARGO, and the working directory at the repository's root.

# shellcheck source=bench/musl.sh
source "$(dirname "${BASH_SOURCE[0]}")/musl.sh"

build_shipped_trellisd() {
    if have_musl; then
        "$CARGO" build --release --target $MUSL -p trellis-controlplane --bin trellisd
        trellisd=${CARGO_TARGET_DIR:-target}/$MUSL/release/trellisd
        trellisd_build="release build, static $MUSL, mimalloc"
        # The code layout controlplane/build.rs links in (lld with controlplane/layout/symbol-order.txt).
        trellisd_build="$trellisd_build$(layout_note "$trellisd" controlplane/layout/symbol-order.txt)"
    else
        echo "controlplane-build: no musl toolchain; using the glibc build"
        "$CARGO" build --release -p trellis-controlplane --bin trellisd
        trellisd=${CARGO_TARGET_DIR:-target}/release/trellisd
        trellisd_build="release build, glibc (dynamic), mimalloc"
    fi
}
