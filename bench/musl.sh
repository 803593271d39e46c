#!/usr/bin/env bash
# Sourced by the scripts that build binaries as they ship (bench/proxy-build.sh,
# bench/controlplane-build.sh): the static musl build and the note on its code layout.
#   have_musl                 true once the musl target and musl-gcc (mimalloc's C code needs it) are
#                             installed, installing them if missing;
#   layout_note BINARY ORDER  how much of the recorded layout ORDER the linked BINARY places first (a low
#                             count means the list is stale), for reports.

MUSL=x86_64-unknown-linux-musl

have_musl() {
    if ! command -v musl-gcc >/dev/null; then
        apt-get install -y musl-tools >/dev/null 2>&1 || true
    fi
    command -v musl-gcc >/dev/null && { rustup target list --installed 2>/dev/null | grep -qx $MUSL || rustup target add $MUSL; }
}

layout_note() {
    local binary=$1 order=$2 placed
    if [[ -f $order ]] && readelf -p .comment "$binary" 2>/dev/null | grep -q LLD; then
        placed=$(nm "$binary" | awk '{ print $NF }' | sort -u | comm -12 - <(sort -u "$order") | wc -l)
        echo ", code layout: $placed of $(wc -l <"$order") recorded functions first"
    else
        echo ", default code layout"
    fi
}
