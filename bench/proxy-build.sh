#!/usr/bin/env bash
# Sourced by the scripts that build the proxy as it ships (bench/bench-proxy.sh, bench/proxy-layout.sh,
# `make proxy-release`): `build_shipped_proxy` builds it and sets
#   proxy  the binary's path;
#   build  how it was built, for reports.
# The shipped build is the static musl release build (no shared libraries to map, so a smaller
# resident set) with mimalloc, linked in the recorded code layout (proxy/build.rs) and optimized with
# the recorded profile (profile-guided optimization: proxy/pgo/, written by `make proxy-pgo`).
# Without the musl target (or musl-gcc, which mimalloc's C code needs) it falls back to the host's
# glibc build and says so; without llvm-profdata (rustup's llvm-tools) it builds without the profile.
# Set TRELLIS_PROXY_NO_PGO to build without the profile.
#
# Expects: CARGO, and the working directory at the repository's root.

# shellcheck source=bench/musl.sh
source "$(dirname "${BASH_SOURCE[0]}")/musl.sh"
# The recorded profile, as text (stable across LLVM versions and readable in a diff); the build
# converts it to LLVM's indexed form under the target folder.
PGO_PROFILE=proxy/pgo/trellis-proxy.proftext

# The path of the toolchain's llvm-profdata, installing rustup's llvm-tools once if it is missing.
llvm_profdata() {
    local sysroot host tool
    sysroot=$(rustc --print sysroot) || return 1
    host=$(rustc -vV | sed -n 's/^host: //p')
    tool=$sysroot/lib/rustlib/$host/bin/llvm-profdata
    [[ -x $tool ]] || rustup component add llvm-tools >/dev/null 2>&1 || true
    [[ -x $tool ]] && echo "$tool"
}

# The rustc flags that apply the recorded profile (empty without one); converts it when it changed.
pgo_flags() {
    local target_dir=${CARGO_TARGET_DIR:-target} profdata tool
    [[ -z ${TRELLIS_PROXY_NO_PGO:-} && -f $PGO_PROFILE ]] || return 0
    tool=$(llvm_profdata) || { echo "proxy-build: no llvm-profdata (rustup component add llvm-tools): building without $PGO_PROFILE" >&2; return 0; }
    # An absolute CARGO_TARGET_DIR is taken as it is; a relative one is under the working directory.
    [[ $target_dir == /* ]] || target_dir=$PWD/$target_dir
    profdata=$target_dir/pgo/trellis-proxy.profdata
    # Rewritten only when the text changed: rustc lists the file as an input, so a new copy rebuilds.
    if [[ ! -f $profdata || $PGO_PROFILE -nt $profdata ]]; then
        mkdir -p "$(dirname "$profdata")"
        "$tool" merge -o "$profdata" "$PGO_PROFILE" || return 1
    fi
    # Functions changed since the recording lose their profile; LLVM would warn for each.
    echo "-Cprofile-use=$profdata -Cllvm-args=-no-pgo-warn-mismatch"
}

build_shipped_proxy() {
    if have_musl; then
        local flags
        flags=$(pgo_flags)
        # RUSTFLAGS reach only the target's crates (with --target), not build scripts or proc macros.
        RUSTFLAGS="${RUSTFLAGS:-} $flags" "$CARGO" build --release --target $MUSL -p trellis-proxy
        proxy=${CARGO_TARGET_DIR:-target}/$MUSL/release/trellis-proxy
        build="release build, static $MUSL, mimalloc"
        if [[ -n $flags ]]; then
            build="$build, profile-guided ($PGO_PROFILE)"
        else
            build="$build, no profile-guided optimization"
        fi
        # The code layout proxy/build.rs links in (lld with proxy/layout/symbol-order.txt).
        build="$build$(layout_note "$proxy" proxy/layout/symbol-order.txt)"
    else
        echo "proxy-build: no musl toolchain; using the glibc build"
        "$CARGO" build --release -p trellis-proxy
        proxy=${CARGO_TARGET_DIR:-target}/release/trellis-proxy
        build="release build, glibc (dynamic), mimalloc"
    fi
}
