#!/usr/bin/env bash
# Profiles one load-test server under wrk with perf (DWARF call graphs), the way the breakdowns in
# docs/performance.md were measured.
#
#   benches/load/profile.sh axum qiflow-noaccess      # FRAMEWORK MODE (modes: see load_*.rs)
#   perf report -i target/load-bench/profile-axum-qiflow-noaccess.data --no-children
#
# The server runs pinned to CPU 0 (PROFILE_SERVER_CPU), wrk to CPU 1, 32 connections on
# 127.0.0.1:$PROFILE_PORT (default 3290): 2 s of warm-up, then 7 s recorded (PROFILE_SECONDS)
# inside a 10 s wrk run. Needs wrk and perf (Debian: linux-perf) and the release binaries
# (run.sh builds them, or: cargo build --release -p qiflow-benches --bin load_axum --bin load_actix).
# DWARF data is large (about 100 MB for 7 s); delete it when done. It stops only what it started.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
fw="${1:?usage: profile.sh axum|actix MODE}"
mode="${2:?usage: profile.sh axum|actix MODE}"
port="${PROFILE_PORT:-3290}"
seconds="${PROFILE_SECONDS:-7}"
server_cpu="${PROFILE_SERVER_CPU:-0}"
client_cpu="${PROFILE_CLIENT_CPU:-1}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/load_$fw"
out="$target_dir/load-bench"
[[ -x "$bin" ]] || { echo "profile.sh: $bin is missing; build it first (see the header)" >&2; exit 1; }
for tool in wrk perf taskset; do
    command -v "$tool" >/dev/null 2>&1 || { echo "profile.sh: $tool is not installed" >&2; exit 1; }
done
mkdir -p "$out"
data="$out/profile-$fw-$mode.data"

server_pid=""
cleanup() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

LOAD_PORT="$port" taskset -c "$server_cpu" "$bin" "$mode" >/dev/null 2>"$out/profile-$fw-$mode.err" &
server_pid=$!
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
url="http://127.0.0.1:$port/users/42"
taskset -c "$client_cpu" wrk -t1 -c32 -d2s "$url" >/dev/null
taskset -c "$client_cpu" wrk -t1 -c32 -d"$((seconds + 3))"s "$url" >"$out/profile-$fw-$mode.wrk" &
wrk_pid=$!
sleep 1
perf record -F 999 --call-graph dwarf,16384 -p "$server_pid" -o "$data" -- sleep "$seconds" 2>/dev/null
wait "$wrk_pid"
echo "$(grep Requests/sec "$out/profile-$fw-$mode.wrk") -> $data"
