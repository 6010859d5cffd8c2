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
# shellcheck source=benches/load/common.sh
source "$root/benches/load/common.sh"

die() {
    echo "profile.sh: $*" >&2
    exit 1
}

fw="${1:?usage: profile.sh axum|actix MODE}"
mode="${2:?usage: profile.sh axum|actix MODE}"
port="${PROFILE_PORT:-3290}"
seconds="${PROFILE_SECONDS:-7}"
server_cpu="${PROFILE_SERVER_CPU:-0}"
client_cpu="${PROFILE_CLIENT_CPU:-1}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/load_$fw"
out="$target_dir/load-bench"
[[ -x "$bin" ]] || die "$bin is missing; build it first (see the header)"
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -ge 1 ]] || die "PROFILE_SECONDS must be a whole number of seconds, at least 1"
for tool in wrk perf taskset; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (Debian: wrk, linux-perf, util-linux)"
done
mkdir -p "$out"
tag="profile-$fw-$mode"
data="$out/$tag.data"

server_pid=""
wrk_pid=""
cleanup() {
    stop_pid "$wrk_pid"
    stop_pid "$server_pid"
}
trap cleanup EXIT
trap 'echo "profile.sh: interrupted" >&2; exit 130' INT TERM

LOAD_PORT="$port" taskset -c "$server_cpu" "$bin" "$mode" >/dev/null 2>"$out/$tag.err" &
server_pid=$!
wait_port "$port" "$server_pid" || die "load_$fw $mode did not start on port $port (see $out/$tag.err)"
url="http://127.0.0.1:$port/users/42"
taskset -c "$client_cpu" wrk -t1 -c32 -d2s "$url" >/dev/null || die "wrk failed against $url"
taskset -c "$client_cpu" wrk -t1 -c32 -d"$((seconds + 3))"s "$url" >"$out/$tag.wrk" &
wrk_pid=$!
sleep 1
perf record -F 999 --call-graph dwarf,16384 -p "$server_pid" -o "$data" -- sleep "$seconds" 2>"$out/$tag.perf.err" ||
    die "perf record failed (see $out/$tag.perf.err)"
wait "$wrk_pid" || die "wrk failed (see $out/$tag.wrk)"
wrk_pid=""
echo "$(grep Requests/sec "$out/$tag.wrk") -> $data"
