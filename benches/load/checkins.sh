#!/usr/bin/env bash
# HTTP check-ins per second on one core: `POST /qiflow/api/jobs/bench/success` (a write token,
# every check-in audited) against the release quickstart pinned to one CPU, beside two floors on
# the same server: an operator request without a token (`GET /health/live`), and one with a token
# and its `qiflow::admin` access line (`GET /qiflow/api/loggers`). See docs/jobs.md.
#
#   benches/load/checkins.sh
#
# Settings (environment): LOAD_DURATION (seconds per run, default 10), LOAD_ROUNDS (default 3),
# LOAD_CONNECTIONS (default 16), LOAD_SERVER_CPU (0), LOAD_CLIENT_CPU (1), LOAD_BASE_PORT (3295),
# LOAD_OUT (default target/load-bench/checkins-<date-time>). Needs wrk. It stops only what it
# started, by pid.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=benches/load/common.sh
source "$root/benches/load/common.sh"

duration="${LOAD_DURATION:-10}"
rounds="${LOAD_ROUNDS:-3}"
connections="${LOAD_CONNECTIONS:-16}"
server_cpu="${LOAD_SERVER_CPU:-0}"
client_cpu="${LOAD_CLIENT_CPU:-1}"
port="${LOAD_BASE_PORT:-3295}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${LOAD_OUT:-$target_dir/load-bench/checkins-$(date +%Y%m%d-%H%M%S)}"

die() {
    echo "checkins.sh: $*" >&2
    exit 1
}
command -v wrk >/dev/null 2>&1 || die "wrk is not installed (Debian: apt-get install -y wrk)."

echo "==> building the quickstart (release)"
cargo build --release -p quickstart
mkdir -p "$out"

server_pid=""
trap 'stop_pid "$server_pid"' EXIT
trap 'exit 130' INT TERM
(
    cd "$out"
    exec env -u RUST_LOG QIFLOW_ADDR="127.0.0.1:$port" QIFLOW__LOGGING__STDOUT=false \
        QIFLOW__LOGGING__DIR="$out/logs" QIFLOW__AUDIT__DIR="$out/audit" \
        taskset -c "$server_cpu" "$target_dir/release/quickstart" >"$out/server.out" 2>"$out/server.err"
) &
server_pid=$!
wait_port "$port" "$server_pid" || die "the quickstart did not start (see $out/server.err)"
for _ in $(seq 1 100); do
    [[ -s "$out/data/admin-token" ]] && break
    sleep 0.05
done
token="$(cat "$out/data/admin-token")"

cat >"$out/checkin.lua" <<EOF
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"size": 48213004}'
EOF

run() { # kind file
    case $1 in
    checkin) taskset -c "$client_cpu" wrk -t1 -c"$connections" -d"${duration}s" -s "$out/checkin.lua" \
        "http://127.0.0.1:$port/qiflow/api/jobs/bench/success" >"$2" 2>&1 ;;
    floor) taskset -c "$client_cpu" wrk -t1 -c"$connections" -d"${duration}s" \
        "http://127.0.0.1:$port/health/live" >"$2" 2>&1 ;;
    authed) taskset -c "$client_cpu" wrk -t1 -c"$connections" -d"${duration}s" \
        -H "Authorization: Bearer $token" "http://127.0.0.1:$port/qiflow/api/loggers" >"$2" 2>&1 ;;
    esac
    grep -q "Non-2xx" "$2" && die "$1: wrk saw errors (see $2)"
    awk '/^Requests\/sec:/ {print $2}' "$2"
}

results="$out/results.tsv"
: >"$results"
for round in $(seq 1 "$rounds"); do
    order=(checkin floor authed)
    case $((round % 3)) in
    2) order=(floor authed checkin) ;;
    0) order=(authed checkin floor) ;;
    esac
    for kind in "${order[@]}"; do
        rps="$(run "$kind" "$out/$kind-$round.wrk")"
        printf '%s\t%s\t%s\n' "$kind" "$round" "$rps" >>"$results"
        printf '    round %d: %-8s %9.0f req/s\n' "$round" "$kind" "$rps"
    done
done
audited="$(cat "$out"/audit/audit-*.jsonl 2>/dev/null | grep -c '"qiflow.job.success"' || true)"

echo
echo "==> results ($rounds rounds of ${duration}s, $connections connections, server CPU $server_cpu)"
awk -F'\t' -v audited="$audited" '
function median(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ v[$1] = v[$1] " " $3; r[$1, $2] = $3; rounds[$2] = 1 }
END {
    q = ""; a = ""
    for (x in rounds) { q = q " " r["checkin", x] / r["floor", x]; a = a " " r["authed", x] / r["floor", x] }
    printf "| request | req/s on one core (median) | vs the floor |\n|---|---:|---:|\n"
    printf "| `GET /health/live` (the floor: an operator request) | %.0f | 100%% |\n", median(v["floor"])
    printf "| `GET /qiflow/api/loggers` with a token (+ the token check and the access line) | %.0f | %.0f%% |\n", median(v["authed"]), 100 * median(a)
    printf "| `POST /qiflow/api/jobs/bench/success` (+ the check-in and its audit record) | %.0f | %.0f%% |\n", median(v["checkin"]), 100 * median(q)
    printf "\naudit records of check-ins written: %s\n", audited
}' "$results" | tee "$out/table.md"
