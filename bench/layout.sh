#!/usr/bin/env bash
# Shared by the `make *-layout` recorders (bench/proxy-layout.sh, bench/controlplane-layout.sh):
#   bench/layout.sh callgrind OUT PROGRAM ARGS...   runs PROGRAM under valgrind's callgrind (in place:
#                                                   the pid stays the same), its profile into OUT;
#   bench/layout.sh order PROFILE...                prints the functions the profiles saw running,
#                                                   hottest first (self cost: instructions executed in
#                                                   the function, calls excluded, summed over all
#                                                   profiles), named as the linker sees them
#                                                   (callgrind marks recursion levels with 'N; unnamed
#                                                   code is dropped).
# The recorders put what callgrind cannot name in front and keep each name's first occurrence.
set -euo pipefail

case ${1:-} in
callgrind)
    exec valgrind --tool=callgrind --demangle=no --dump-instr=no --compress-strings=no --compress-pos=no --callgrind-out-file="$2" "${@:3}"
    ;;
order)
    awk '
    /^fn=/ { cur = substr($0, 4); sub(/\x27[0-9]+$/, "", cur); next }
    /^(cfn|cfi|cfl|cob)=/ { next }
    /^calls=/ { skip = 1; next }
    /^[0-9+-]/ { if (skip) { skip = 0; next } n = split($0, f, " "); if (cur != "" && cur !~ /^(0x|\()/) cost[cur] += f[n]; next }
    END { for (name in cost) print cost[name], name }' "${@:2}" | sort -k1,1nr -k2 | awk '{ print $2 }'
    ;;
*)
    echo "usage: bench/layout.sh callgrind OUT PROGRAM ARGS... | order PROFILE..." >&2
    exit 2
    ;;
esac
