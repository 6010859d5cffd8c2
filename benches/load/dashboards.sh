#!/usr/bin/env bash
# What open dashboards cost the service: the CPU of an idle service, and its requests/s under
# load, with DASH_PAGES dashboards polling GET /qiflow/api/overview every 2 s (what each open
# /qiflow/ page does) against none. See docs/performance.md ("Dashboards").
#
#   benches/load/dashboards.sh
#
# The server is src/bin/load_axum.rs in its `qiflow` mode (release build), pinned to one CPU with
# taskset; the pollers (poll_overview.py: one keep-alive connection per dashboard, one request
# at a time, 2 s apart, as the page) and wrk are pinned to another. Under load it reports the
# server's CPU time per request beside requests/s: the pollers share wrk's CPU, which can lower
# requests/s without costing the server anything. "None" and "five" alternate in rotated order over the rounds, on the same server.
#
# Settings (environment):
#   DASH_PAGES        dashboards to open (default 5)
#   DASH_IDLE         seconds of one idle measurement (default 60; 0: no idle measurement)
#   DASH_ROUNDS       rounds (default 3)
#   LOAD_DURATION     wrk duration of one loaded run, seconds (default 10)
#   LOAD_CONNECTIONS  wrk connections (default 32)
#   LOAD_SERVER_CPU   CPU of the server (default 0); LOAD_CLIENT_CPU: wrk and the pollers (default 1)
#   LOAD_BASE_PORT    the server's port on 127.0.0.1 (default 3290)
#   LOAD_OUT          directory for the raw outputs (default target/load-bench/dashboards-<date-time>)
#
# With the defaults: 3 x (3 x 62 s idle + 2 x 11 s loaded), about 10 minutes plus the build.
# It installs nothing. It stops only the processes it started (by PID), also when interrupted.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=benches/load/common.sh
source "$root/benches/load/common.sh"

pages="${DASH_PAGES:-5}"
idle="${DASH_IDLE:-60}"
rounds="${DASH_ROUNDS:-3}"
duration="${LOAD_DURATION:-10}"
connections="${LOAD_CONNECTIONS:-32}"
server_cpu="${LOAD_SERVER_CPU:-0}"
client_cpu="${LOAD_CLIENT_CPU:-1}"
port="${LOAD_BASE_PORT:-3290}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${LOAD_OUT:-$target_dir/load-bench/dashboards-$(date +%Y%m%d-%H%M%S)}"

die() {
    echo "dashboards.sh: $*" >&2
    exit 1
}
for tool in wrk taskset curl python3; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is not installed (Debian: apt-get install -y wrk util-linux curl python3)."
done

echo "==> building the load server (release)"
cargo build --release -p qiflow-benches --bin load_axum
mkdir -p "$out"
clk_tck="$(getconf CLK_TCK)"

server_pid=""
pollers=()
stop_pollers() {
    local pid
    for pid in "${pollers[@]}"; do
        stop_pid "$pid"
    done
    pollers=()
}
cleanup() {
    stop_pollers
    stop_pid "$server_pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server keeps its files (logs, the token it makes) in $out, never in the source tree.
(
    cd "$out"
    exec env LOAD_PORT="$port" QIFLOW__ADMIN__TOKEN_FILE="$out/admin-token" \
        taskset -c "$server_cpu" "$target_dir/release/load_axum" qiflow >"$out/server.out" 2>"$out/server.err"
) &
server_pid=$!
wait_port "$port" "$server_pid" || die "load_axum did not start on port $port (see $out/server.err)"
for _ in $(seq 1 100); do
    [[ -s "$out/admin-token" ]] && break
    sleep 0.05
done
token="$(cat "$out/admin-token")"
overview="http://127.0.0.1:$port/qiflow/api/overview"
code="$(curl -s -o "$out/overview.json" -w '%{http_code}' -H "Authorization: Bearer $token" "$overview")"
[[ "$code" == 200 ]] || die "GET /qiflow/api/overview answered $code (see $out/overview.json)"

# Opens $1 dashboards: one process polls the overview for all of them (or $2, another path),
# each on its own keep-alive connection every 2 s, as the page does.
open_dashboards() {
    ((${1} > 0)) || return 0
    taskset -c "$client_cpu" python3 "$root/benches/load/poll_overview.py" "$port" "$out/admin-token" "$1" \
        "${2:-/qiflow/api/overview}" 2>>"$out/poller.err" &
    pollers+=("$!")
}

results="$out/results.tsv"
printf 'kind\tpages\tround\tvalue\n' >"$results"
for round in $(seq 1 "$rounds"); do
    order=(0 "$pages")
    ((round % 2 == 0)) && order=("$pages" 0)
    # Idle: none, the floor (as many pollers of /health/live: what any request at that rate
    # costs), and the dashboards, in rotated order.
    idle_order=(0 floor "$pages")
    case $((round % 3)) in
    2) idle_order=(floor "$pages" 0) ;;
    0) idle_order=("$pages" 0 floor) ;;
    esac
    for n in "${idle_order[@]}"; do
        ((idle > 0)) || break
        if [[ "$n" == floor ]]; then
            open_dashboards "$pages" /health/live
        else
            open_dashboards "$n"
        fi
        sleep 2
        before="$(proc_cpu_ticks "$server_pid")"
        sleep "$idle"
        after="$(proc_cpu_ticks "$server_pid")"
        stop_pollers
        cpu="$(awk -v t="$((after - before))" -v hz="$clk_tck" -v s="$idle" 'BEGIN { printf "%.4f", 100 * t / hz / s }')"
        printf 'idle\t%s\t%s\t%s\n' "$n" "$round" "$cpu" >>"$results"
        printf '    round %d: idle, %s: %7.4f%% of one CPU\n' "$round" "$n" "$cpu"
    done
    for n in "${order[@]}"; do
        open_dashboards "$n"
        sleep 1
        w="$out/load-$n-$round.wrk"
        before="$(proc_cpu_ticks "$server_pid")"
        taskset -c "$client_cpu" wrk -t1 -c"$connections" -d"${duration}s" \
            "http://127.0.0.1:$port/users/42" >"$w" 2>&1 || die "wrk failed (see $w)"
        after="$(proc_cpu_ticks "$server_pid")"
        stop_pollers
        rps="$(awk '/^Requests\/sec:/ {print $2}' "$w")"
        [[ -n "$rps" ]] || die "no Requests/sec in $w"
        requests="$(awk '/requests in/ {print $1}' "$w")"
        cpu_us="$(awk -v t="$((after - before))" -v hz="$clk_tck" -v n="$requests" \
            'BEGIN { printf "%.3f", (n > 0 ? t * 1e6 / hz / n : 0) }')"
        printf 'load\t%s\t%s\t%s\n' "$n" "$round" "$rps" >>"$results"
        printf 'cpu\t%s\t%s\t%s\n' "$n" "$round" "$cpu_us" >>"$results"
        printf '    round %d: load, %d dashboards: %9.0f req/s, %6.3f CPU us/request\n' "$round" "$n" "$rps" "$cpu_us"
    done
done

echo
echo "==> results ($rounds rounds; idle ${idle}s, load ${duration}s with $connections connections; server CPU $server_cpu)"
awk -F'\t' -v pages="$pages" '
function median(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
NR > 1 { v[$1, $2] = v[$1, $2] " " $4; r[$1, $2, $3] = $4; rounds[$3] = 1 }
END {
    d = ""; f = ""; q = ""; c = ""
    for (x in rounds) {
        if ((("idle", 0, x) in r)) {
            d = d " " (r["idle", pages, x] - r["idle", 0, x])
            f = f " " (r["idle", "floor", x] - r["idle", 0, x])
        }
        if (r["load", 0, x] > 0) q = q " " r["load", pages, x] / r["load", 0, x]
        if (r["cpu", 0, x] > 0) c = c " " r["cpu", pages, x] / r["cpu", 0, x]
    }
    printf "| measure | no dashboard | %d dashboards | difference (paired, median) |\n", pages
    printf "|---|---:|---:|---:|\n"
    if (d != "") {
        printf "| idle CPU, %% of one CPU | %.3f | %.3f | %+.3f points |\n", median(v["idle", 0]), median(v["idle", pages]), median(d)
        printf "| idle CPU, %% of one CPU, the floor: %d pollers of /health/live | %.3f | %.3f | %+.3f points |\n", pages, median(v["idle", 0]), median(v["idle", "floor"]), median(f)
    }
    printf "| requests/s under load | %.0f | %.0f | %+.1f%% |\n", median(v["load", 0]), median(v["load", pages]), 100 * (median(q) - 1)
    printf "| server CPU µs per request under load | %.3f | %.3f | %+.1f%% |\n", median(v["cpu", 0]), median(v["cpu", pages]), 100 * (median(c) - 1)
}' "$results" | tee "$out/table.md"
