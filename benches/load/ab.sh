#!/usr/bin/env bash
# A/B of two builds of the same load server: the same MODE from binary A and binary B, with the
# framework's `bare` mode (from A) as the per-round reference, interleaved over ROUNDS rounds.
# For a change to qiflow itself, which run.sh cannot compare (it runs one build):
#
#   cargo build --release -p qiflow-benches --bin load_actix
#   cp target/release/load_actix /tmp/load_actix_before     # the build before the change
#   # ...make the change...
#   cargo build --release -p qiflow-benches --bin load_actix
#   benches/load/ab.sh /tmp/load_actix_before target/release/load_actix qiflow-noaccess
#
# Settings (environment): AB_ROUNDS (default 5), AB_DURATION seconds per run (default 6),
# AB_BASE_PORT (default 3400), AB_SERVER_CPU (0) and AB_CLIENT_CPU (1), as in run.sh.
# Prints one line per run, then the medians over the rounds of B/A requests/s and B/A CPU per
# request. Needs wrk and taskset. It stops only the servers it started.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=benches/load/common.sh
source "$root/benches/load/common.sh"

die() {
    echo "ab.sh: $*" >&2
    exit 1
}

[[ $# == 3 ]] || die "usage: ab.sh BINARY_A BINARY_B MODE"
bin_a="$1"
bin_b="$2"
mode="$3"
rounds="${AB_ROUNDS:-5}"
duration="${AB_DURATION:-6}"
port="${AB_BASE_PORT:-3400}"
server_cpu="${AB_SERVER_CPU:-0}"
client_cpu="${AB_CLIENT_CPU:-1}"
for bin in "$bin_a" "$bin_b"; do
    [[ -x "$bin" ]] || die "$bin is not an executable load server (load_axum or load_actix)"
done
# The servers run in their own temp directories.
bin_a="$(realpath "$bin_a")"
bin_b="$(realpath "$bin_b")"
for tool in wrk taskset; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (Debian: wrk, util-linux)"
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "AB_ROUNDS must be a whole number, at least 1"
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || die "AB_DURATION must be a whole number of seconds, at least 1"

tmp="$(mktemp -d)"
server=""
cleanup() {
    stop_pid "$server"
    rm -rf "$tmp"
}
trap cleanup EXIT

# run NAME BINARY SERVER_MODE: one warmed-up wrk run, on a port of its own; sets `line` to
# "NAME RPS P99 CPU_US_PER_REQUEST".
line=""
run() {
    local name="$1" bin="$2" server_mode="$3" dir out t0 t1 requests p99
    port=$((port + 1))
    dir="$tmp/$name-$port"
    mkdir -p "$dir"
    (cd "$dir" && LOAD_PORT="$port" exec taskset -c "$server_cpu" "$bin" "$server_mode") \
        >"$dir/server.out" 2>&1 &
    server=$!
    wait_port "$port" "$server" || die "$bin $server_mode did not listen on $port ($dir/server.out)"
    taskset -c "$client_cpu" wrk -t1 -c32 -d1s "http://127.0.0.1:$port/users/42" >/dev/null
    t0="$(proc_cpu_ticks "$server")"
    out="$(taskset -c "$client_cpu" wrk -t1 -c32 -d"${duration}s" --latency "http://127.0.0.1:$port/users/42")"
    t1="$(proc_cpu_ticks "$server")"
    stop_pid "$server"
    server=""
    requests="$(awk '/requests in/ { print $1 }' <<<"$out")"
    p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    line="$(awk -v name="$name" -v p99="$p99" -v t0="$t0" -v t1="$t1" -v n="$requests" \
        -v hz="$(getconf CLK_TCK)" '
        /Requests\/sec/ { rps = $2 }
        END { printf "%s %s %s %.2f\n", name, rps, p99, (n > 0 ? (t1 - t0) * 1e6 / hz / n : 0) }
    ' <<<"$out")"
}

results="$tmp/results"
for ((r = 1; r <= rounds; r++)); do
    for v in bare A B; do
        case "$v" in
        bare) run bare "$bin_a" bare ;;
        A) run A "$bin_a" "$mode" ;;
        B) run B "$bin_b" "$mode" ;;
        esac
        echo "round $r: $line (req/s, p99 ms, CPU µs per request)"
        echo "$r $line" >>"$results"
    done
done

awk '
    { rps[$1, $2] = $3; cpu[$1, $2] = $5; if ($1 > rounds) rounds = $1 }
    function median(a, n,    i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        for (r = 1; r <= rounds; r++) {
            speed[r] = rps[r, "B"] / rps[r, "A"]; cost[r] = cpu[r, "B"] / cpu[r, "A"]
            share_a[r] = rps[r, "A"] / rps[r, "bare"]; share_b[r] = rps[r, "B"] / rps[r, "bare"]
        }
        printf "B/A req/s: median %.3f over %d rounds; B/A CPU per request: median %.3f\n", median(speed, rounds), rounds, median(cost, rounds)
        printf "share of bare: A %.1f%%, B %.1f%% (medians)\n", 100 * median(share_a, rounds), 100 * median(share_b, rounds)
    }
' "$results"
