#!/usr/bin/env bash
# Side-by-side load benchmark: axum and actix-web, bare, with qiflow, and with the stacks users
# assemble today, under wrk on 127.0.0.1. See docs/performance.md for what it measures.
#
#   benches/load/run.sh
#
# Each server process (benches/src/bin/load_{axum,actix}.rs, release build) is pinned to one CPU
# with taskset and wrk to another. The modes run interleaved over several rounds (each round in a
# rotated order), and the table gives medians, ratios to the same framework's bare server
# (paired per round), and latency percentiles.
#
# Settings (environment):
#   LOAD_DURATION      wrk duration of one measured run, in seconds (default 10)
#   LOAD_WARMUP        wrk warm-up before each measured run, in seconds (default 1; 0: none)
#   LOAD_ROUNDS        rounds over all modes (default 3)
#   LOAD_CONNECTIONS   wrk connections (default 32)
#   LOAD_AXUM_MODES    default "bare qiflow qiflow-noaccess trace sentry axum-prometheus assembled
#                      otel-anchor"; set but empty (LOAD_AXUM_MODES=""): no axum run. Every mode of
#                      src/bin/load_axum.rs can be named, e.g. span-registry or qiflow-minimal
#   LOAD_ACTIX_MODES   default "bare qiflow qiflow-noaccess assembled"; set but empty: no actix run
#   LOAD_SERVER_CPU    CPU of the server (default 0); LOAD_CLIENT_CPU: wrk and the sink (default 1)
#   LOAD_BASE_PORT     first port used on 127.0.0.1 (default 3200; one port per run, the sink on
#                      LOAD_BASE_PORT - 1)
#
# The sink (src/bin/load_sink.rs) runs, pinned with wrk, for the modes that send to it: axum's
# sentry, assembled and the -fail10 ones but bare-fail10 (Sentry envelopes, DSN from
# LOAD_SENTRY_PORT), and otel-anchor, qiflow-otlp and qiflow-otlp-1pct (OTLP/HTTP trace exports to LOAD_OTLP_ENDPOINT,
# http://127.0.0.1:<sink port>/v1/traces). The table's last columns divide what it received by
# the requests wrk sent: Sentry envelopes, and the spans in the OTLP exports (1.000 when every
# request's span arrived; less when an exporter dropped spans).
#   LOAD_OUT           directory for the raw outputs (default target/load-bench/<date-time>)
#
# With the defaults: 12 modes x 3 rounds x ~13 s, about 8-9 minutes plus the release build.
# It installs nothing. It stops only the processes it started (by PID), also when interrupted.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

duration="${LOAD_DURATION:-10}"
warmup="${LOAD_WARMUP:-1}"
rounds="${LOAD_ROUNDS:-3}"
connections="${LOAD_CONNECTIONS:-32}"
axum_modes="${LOAD_AXUM_MODES-bare qiflow qiflow-noaccess trace sentry axum-prometheus assembled otel-anchor}"
actix_modes="${LOAD_ACTIX_MODES-bare qiflow qiflow-noaccess assembled}"
server_cpu="${LOAD_SERVER_CPU:-0}"
client_cpu="${LOAD_CLIENT_CPU:-1}"
base_port="${LOAD_BASE_PORT:-3200}"
sink_port=$((base_port - 1))
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${LOAD_OUT:-$target_dir/load-bench/$(date +%Y%m%d-%H%M%S)}"

die() {
    echo "run.sh: $*" >&2
    exit 1
}

command -v wrk >/dev/null 2>&1 ||
    die "wrk is not installed. On Debian/Ubuntu: apt-get install -y wrk (as root; run apt-get update first if the package is not found)."
command -v taskset >/dev/null 2>&1 ||
    die "taskset is not installed (Debian: util-linux)."
[[ "$duration" =~ ^[0-9]+$ && "$duration" -ge 1 ]] || die "LOAD_DURATION must be a whole number of seconds, at least 1"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "LOAD_WARMUP must be a whole number of seconds"
[[ "$rounds" =~ ^[0-9]+$ && "$rounds" -ge 1 ]] || die "LOAD_ROUNDS must be at least 1"
cpus="$(nproc)"
((server_cpu < cpus && client_cpu < cpus)) ||
    die "this machine has $cpus CPU(s); set LOAD_SERVER_CPU and LOAD_CLIENT_CPU to two of 0..$((cpus - 1))"
[[ "$server_cpu" != "$client_cpu" ]] || echo "run.sh: warning: the server and wrk share CPU $server_cpu" >&2

# shellcheck source=benches/load/common.sh
source "$root/benches/load/common.sh"

# Processes this script started, by PID; stopped on exit, whatever the exit.
server_pid=""
sink_pid=""
wrk_pid=""
cleanup() {
    stop_pid "$wrk_pid"
    stop_pid "$server_pid"
    stop_pid "$sink_pid"
    wrk_pid=""
    server_pid=""
    sink_pid=""
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

echo "==> building the load servers (release)"
cargo build --release -p qiflow-benches --bin load_axum --bin load_actix --bin load_sink
bin="$target_dir/release"

mkdir -p "$out"
results="$out/results.tsv"
printf 'framework\tmode\tround\trps\tp50_ms\tp99_ms\trequests\terrors\tlog_lines\tenvelopes\tcpu_us_per_request\tspans\n' >"$results"

clk_tck="$(getconf CLK_TCK)"

# Runs wrk pinned to the client CPU in the background, so the traps can stop it by PID.
run_wrk() {
    local seconds="$1" url="$2" file="$3"
    taskset -c "$client_cpu" wrk -t1 -c"$connections" -d"${seconds}s" --latency "$url" >"$file" 2>&1 &
    wrk_pid=$!
    wait "$wrk_pid" || {
        wrk_pid=""
        return 1
    }
    wrk_pid=""
}

runs=()
for m in $axum_modes; do runs+=("axum $m"); done
for m in $actix_modes; do runs+=("actix $m"); done
((${#runs[@]} > 0)) || die "no modes to run: LOAD_AXUM_MODES and LOAD_ACTIX_MODES are both empty"
total=$((${#runs[@]} * rounds))
echo "==> $total runs (${#runs[@]} modes x $rounds rounds), ${warmup}s warm-up + ${duration}s each, $connections connections"
echo "    server on CPU $server_cpu, wrk on CPU $client_cpu; raw outputs in $out"
{
    echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo) x $cpus"
    echo "kernel: $(uname -sr)"
    echo "rustc: $(rustc --version)"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt" | sed 's/^/    /'

port="$base_port"
n=0
for ((round = 1; round <= rounds; round++)); do
    count=${#runs[@]}
    for ((i = 0; i < count; i++)); do
        # Rotate the order each round so no mode always runs right after the same neighbour.
        read -r fw mode <<<"${runs[$(((i + round - 1) % count))]}"
        n=$((n + 1))
        port=$((port + 1))
        tag="$fw-$mode-r$round"
        sink_env=()
        if [[ "$fw" == axum && ("$mode" == sentry || "$mode" == assembled || "$mode" == otel-anchor ||
            "$mode" == qiflow-otlp* || "$mode" == *-fail10 && "$mode" != bare-fail10) ]]; then
            LOAD_SINK_PORT="$sink_port" taskset -c "$client_cpu" "$bin/load_sink" 2>"$out/$tag.sink.err" &
            sink_pid=$!
            wait_port "$sink_port" "$sink_pid" || die "load_sink did not start (see $out/$tag.sink.err)"
            sink_env=(LOAD_SENTRY_PORT="$sink_port" LOAD_OTLP_ENDPOINT="http://127.0.0.1:$sink_port/v1/traces")
        fi
        env LOAD_PORT="$port" "${sink_env[@]}" taskset -c "$server_cpu" "$bin/load_$fw" "$mode" \
            >"$out/$tag.out" 2>"$out/$tag.err" &
        server_pid=$!
        wait_port "$port" "$server_pid" || die "load_$fw $mode did not start on port $port (see $out/$tag.err)"
        url="http://127.0.0.1:$port/users/42"
        if ((warmup > 0)); then
            run_wrk "$warmup" "$url" "$out/$tag.warmup.wrk" || die "wrk failed (see $out/$tag.warmup.wrk)"
        fi
        cpu_before="$(proc_cpu_ticks "$server_pid")"
        run_wrk "$duration" "$url" "$out/$tag.wrk" || die "wrk failed (see $out/$tag.wrk)"
        cpu_after="$(proc_cpu_ticks "$server_pid")"
        stop_pid "$server_pid"
        server_pid=""
        envelopes="-"
        spans="-"
        if [[ -n "$sink_pid" ]]; then
            stop_pid "$sink_pid"
            sink_pid=""
            envelopes="$(sed -n 's/.*envelopes=\([0-9]*\).*/\1/p' "$out/$tag.sink.err" | tail -1)"
            spans="$(sed -n 's/.* spans=\([0-9]*\).*/\1/p' "$out/$tag.sink.err" | tail -1)"
            unparsed="$(sed -n 's/.*otlp_unparsed=\([0-9]*\).*/\1/p' "$out/$tag.sink.err" | tail -1)"
            [[ "${unparsed:-0}" == 0 ]] ||
                echo "run.sh: warning: the sink could not count the spans of $unparsed OTLP exports of $tag (see $out/$tag.sink.err)" >&2
        fi

        w="$out/$tag.wrk"
        rps="$(awk '/^Requests\/sec:/ {print $2}' "$w")"
        p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$w")")"
        p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$w")")"
        requests="$(awk '/requests in/ {print $1}' "$w")"
        # The server's own CPU time per request over the measured run (all its threads): unlike
        # req/s, other processes taking turns on its CPU do not change it.
        cpu_us="$(awk -v t="$((cpu_after - cpu_before))" -v hz="$clk_tck" -v n="$requests" \
            'BEGIN { printf "%.3f", (n > 0 ? t * 1e6 / hz / n : 0) }')"
        if ((warmup > 0)); then
            requests=$((requests + $(awk '/requests in/ {print $1}' "$out/$tag.warmup.wrk")))
        fi
        errors="$(awk '/Socket errors|Non-2xx/ {s = s $0 ";"} END {gsub(/ +/, " ", s); print (s == "" ? "-" : s)}' "$w")"
        log_lines="$(sed -n 's/.*log_lines=\([0-9]*\).*/\1/p' "$out/$tag.err" | tail -1)"
        [[ -n "$rps" ]] || die "no Requests/sec in $w"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
            "$fw" "$mode" "$round" "$rps" "$p50" "$p99" "$requests" "$errors" "${log_lines:-0}" "${envelopes:-0}" "$cpu_us" "${spans:-0}" >>"$results"
        printf '    [%2d/%d] %-5s %-16s round %d: %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  CPU %6.2f us/req\n' \
            "$n" "$total" "$fw" "$mode" "$round" "$rps" "$p50" "$p99" "$cpu_us"
    done
done

echo
echo "==> results ($rounds rounds of ${duration}s, $connections connections, server CPU $server_cpu, wrk CPU $client_cpu)"
awk -F'\t' -v modes="${runs[*]}" '
function median(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
NR > 1 {
    k = $1 " " $2
    rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6; cpu[k] = cpu[k] " " $11
    r[k, $3] = $4; q[k, $3] = $6; c[k, $3] = $11; rounds[$3] = 1
    req[k] += $7; logl[k] += $9; env[k] += $10; spn[k] += $12
    if ($8 != "-") err[k] = err[k] $8
    if (!(k in seen) || $4 + 0 < lo[k]) lo[k] = $4 + 0
    if (!(k in seen) || $4 + 0 > hi[k]) hi[k] = $4 + 0
    seen[k] = 1
}
END {
    printf "| framework | mode | req/s (median) | req/s (min–max) | vs bare | CPU µs / request | CPU vs bare | p50 ms | p99 ms | p99 added ms | log lines / requests | envelopes / requests | OTLP spans / requests |\n"
    printf "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    n = split(modes, m, " ")
    for (i = 1; i < n; i += 2) {
        k = m[i] " " m[i + 1]; b = m[i] " bare"
        ratio = "n/a"; added = "n/a"; cratio = "n/a"; rl = ""; al = ""; cl = ""
        if (b in seen) {
            for (x in rounds) if ((k, x) in r && (b, x) in r) {
                rl = rl " " r[k, x] / r[b, x]; al = al " " q[k, x] - q[b, x]
                if (c[k, x] > 0) cl = cl " " c[b, x] / c[k, x]
            }
            if (rl != "") { ratio = sprintf("%.0f%%", 100 * median(rl)); added = sprintf("%+.3f", median(al)) }
            if (cl != "") cratio = sprintf("%.0f%%", 100 * median(cl))
        }
        if (k == b) { ratio = "100%"; added = "0"; cratio = "100%" }
        ll = logl[k] > 0 ? sprintf("%.3f", logl[k] / req[k]) : "–"
        ee = env[k] > 0 ? sprintf("%.3f", env[k] / req[k]) : "–"
        ss = spn[k] > 0 ? sprintf("%.3f", spn[k] / req[k]) : "–"
        printf "| %s | %s | %.0f | %.0f–%.0f | %s | %.2f | %s | %.3f | %.3f | %s | %s | %s | %s |\n", m[i], m[i + 1], median(rps[k]), lo[k], hi[k], ratio, median(cpu[k]), cratio, median(p50[k]), median(p99[k]), added, ll, ee, ss
        if (k in err) printf "|   | ⚠ wrk reported: %s | | | | | | | | | | | |\n", err[k]
    }
}' "$results" | tee "$out/table.md"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
echo
echo "vs bare and p99 added: medians over the rounds of the per-round ratio and difference to the same framework's bare run."
echo "CPU µs / request: the server process's CPU time (all threads, /proc/PID/stat) over the measured run, per request;"
echo "CPU vs bare: bare's CPU per request over the mode's (what req/s would be on a CPU of its own), median per round."
echo "raw outputs: $out (results.tsv, table.md, one .wrk/.err per run)"
