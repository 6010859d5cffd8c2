#!/usr/bin/env bash
# The request path's cost in instructions, variant by variant, under valgrind's callgrind, which
# counts instructions: the same count for the same binary and input whatever else the machine
# is doing, so the parts of a request can be compared against their floor on a busy machine.
#
#   benches/load/request_cost.sh                 # every variant, 2,000 requests each
#   REQUESTS=4000 benches/load/request_cost.sh bare span qiflow
#   KEEP=/tmp/cg benches/load/request_cost.sh    # keep the callgrind files, for callgrind_annotate
#
# For each variant of `request_cost` (benches/src/bin/request_cost.rs: bare, span-registry,
# floor, span, qiflow-minimal, qiflow-nometrics, qiflow-noaccess, qiflow), it prints the instructions per
# request on the thread that serves the requests (the loop in `measured`, `--toggle-collect`):
# what the request path itself costs, against `bare` and against the row before; and the
# allocations per request. qiflow's worker threads (the log writer, the pipelines) are left out
# of the instructions: under valgrind their count depends on the wall time (they wait, poll and
# tick), so `load/run.sh` measures them, as CPU time of the whole server.
#
# Needs valgrind (`apt-get install -y valgrind`). Builds request_cost in release first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

requests=${REQUESTS:-2000}
variants=("$@")
[[ ${#variants[@]} -gt 0 ]] || variants=(bare span-registry floor span qiflow-minimal qiflow-nometrics qiflow-noaccess qiflow)
command -v valgrind >/dev/null || {
    echo "request_cost.sh: valgrind is not installed; apt-get install -y valgrind" >&2
    exit 1
}

cargo build --release -q -p qiflow-benches --bin request_cost
bin=${CARGO_TARGET_DIR:-target}/release/request_cost
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[[ -n "${KEEP:-}" ]] || trap 'rm -rf "$out"' EXIT

# Instructions callgrind collected in a run (its "Collected" line on stderr), and the allocations
# per request the program printed: "<instructions> <allocations>".
collected() {
    local variant="$1" n="$2" file="$3"
    shift 3
    valgrind --tool=callgrind "$@" --callgrind-out-file="$file" "$bin" "$variant" "$n" 2>&1 |
        awk '/Collected :/ { ir = $NF } /^allocations per request:/ { al = $NF } END { print ir, al }'
}

printf '%-18s %14s %10s %10s %12s\n' variant "instructions" "+bare" "+previous" "allocations"
base="" prev=""
for variant in "${variants[@]}"; do
    read -r total allocations < <(collected "$variant" "$requests" "$out/$variant.%p" --toggle-collect='*measured*')
    per=$((total / requests))
    [[ -n "$base" ]] || base=$per
    [[ -n "$prev" ]] || prev=$per
    printf '%-18s %14d %+10d %+10d %12s\n' "$variant" "$per" $((per - base)) $((per - prev)) "$allocations"
    prev=$per
done
echo
echo "instructions per request on the request thread, ${requests} requests per variant;"
echo "allocations per request on every thread (a counting allocator every variant pays alike)"
[[ -z "${KEEP:-}" ]] || echo "callgrind files in $out (callgrind_annotate --inclusive=no <file>)"
