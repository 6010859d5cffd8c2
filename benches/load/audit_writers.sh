#!/usr/bin/env bash
# Audit records per second into one PostgreSQL from 1, 2 and 4 writer processes, each the
# chain of its own instance (what qiflow does), beside the floor of one global chain (the same
# writers taking turns under an advisory lock: src/bin/audit_writer.rs, `--global`).
#
#   bash benches/load/audit_writers.sh            # 20,000 records per writer, batches of 100
#   RECORDS=5000 BATCH=100 bash benches/load/audit_writers.sh
#
# A throwaway cluster (initdb/pg_ctl from /usr/lib/postgresql/*/bin) on a free loopback port,
# with the server's defaults (fsync and synchronous_commit on): each batch is one committed
# transaction, as the sink writes it. Every run starts on an empty table; every chain is
# verified after each run (`verify_postgres`, through `qiflow audit verify --postgres`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=.ci/lib.sh
source .ci/lib.sh

RECORDS=${RECORDS:-20000}
BATCH=${BATCH:-100}
ROUNDS=${ROUNDS:-3}
target_dir=${CARGO_TARGET_DIR:-target}

cargo build --release -p qiflow-benches --bin audit_writer -p qiflow-core --bin qiflow --features qiflow-core/cli >&2
writer=$(cd "$target_dir/release" && pwd)/audit_writer
qiflow=$(cd "$target_dir/release" && pwd)/qiflow

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-audit-writers.XXXXXX")
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    pg_stop "$tmp"
    [[ $rc -ne 0 && -f $tmp/server.log ]] && tail -n 20 "$tmp/server.log" >&2
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg_init "$tmp"
pg_start "$tmp" "$port"
export QIFLOW_BENCH_POSTGRES_URL="postgres://qiflow@127.0.0.1:$port/postgres"
"$(pg_bindir)/postgres" --version >&2

# run WRITERS [--global]: prints the records/s of all writers together.
run() {
    local writers=$1 mode=${2:-} start="$tmp/start" i out
    "$(pg_bindir)/psql" -q -h 127.0.0.1 -p "$port" -U qiflow -d postgres \
        -c "DROP TABLE IF EXISTS qiflow_audit; DROP TABLE IF EXISTS qiflow_audit_witness" >/dev/null 2>&1
    rm -f "$start" "$tmp"/out.*
    pids=()
    for ((i = 0; i < writers; i++)); do
        "$writer" "bench-$i" "$RECORDS" "$BATCH" "$start" $mode >"$tmp/out.$i" &
        pids+=($!)
    done
    # Every writer has connected and resumed its chain (its first record is in) before the start.
    for ((i = 0; i < 200; i++)); do
        out=$("$(pg_bindir)/psql" -tA -h 127.0.0.1 -p "$port" -U qiflow -d postgres \
            -c "SELECT count(DISTINCT instance) FROM qiflow_audit" 2>/dev/null || echo 0)
        [[ $out == "$writers" ]] && break
        sleep 0.05
    done
    touch "$start"
    for pid in "${pids[@]}"; do wait "$pid"; done
    pids=()
    QIFLOW__AUDIT__POSTGRES_URL=$QIFLOW_BENCH_POSTGRES_URL \
        QIFLOW__AUDIT__SIGNING_KEY="bench signing key" \
        "$qiflow" audit verify --postgres >"$tmp/verify.txt" || {
        cat "$tmp/verify.txt" >&2
        echo "audit_writers: the trail does not verify" >&2
        return 1
    }
    cat "$tmp"/out.* | awk -v w="$writers" '
        { n += $2; if ($3 > t) t = $3 }
        END { if (NR != w) { print "missing writer output" > "/dev/stderr"; exit 1 }
              printf "%.0f\n", n / t }'
}

echo "records per writer: $RECORDS, batch: $BATCH, rounds: $ROUNDS (median shown)"
printf '%-8s %-22s %-22s %s\n' writers "per-instance chains/s" "global-chain floor/s" ratio
for writers in 1 2 4; do
    chains=() global=()
    for ((r = 0; r < ROUNDS; r++)); do
        chains+=("$(run "$writers")")
        global+=("$(run "$writers" --global)")
    done
    c=$(printf '%s\n' "${chains[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    g=$(printf '%s\n' "${global[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%-8s %-22s %-22s %s\n' "$writers" "$c" "$g" "$(awk -v c="$c" -v g="$g" 'BEGIN {printf "%.2fx", c / g}')"
done
