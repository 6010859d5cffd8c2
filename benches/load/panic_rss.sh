#!/usr/bin/env bash
# What panics cost in resident memory: the release quickstart's RSS before any panic, after the
# first `GET /panic` and after the Nth, and how long the panicking requests took. See
# docs/errors.md, "Backtraces and memory".
#
#   benches/load/panic_rss.sh                 # builds and measures target/release/quickstart
#   benches/load/panic_rss.sh OLD NEW ...     # measures each binary given (copies of builds)
#
# Each binary runs alone, in a fresh temporary working directory (its ./logs and ./data go
# there), on 127.0.0.1 only. RSS is VmRSS from /proc/PID/status, split into RssAnon (heap) and
# RssFile (mapped files: the binary's pages, and any debug info a symbolizer maps). The peak is
# VmHWM at the end: the most the process ever had resident, transient symbolization included.
# The first panicking request is timed, and the median of the others is given.
#
# Settings (environment):
#   PANIC_RSS_PORT       port on 127.0.0.1 (default 3300)
#   PANIC_RSS_COUNT      panics in all (default 100)
#   PANIC_RSS_BACKTRACE  RUST_BACKTRACE for the server (default 1: the standard library's hook,
#                        when it runs, resolves a backtrace; 0 shows the cost without that)
#   PANIC_RSS_SETTLE     seconds to wait after the panics before reading RSS (default 2: the
#                        worker resolves the stack off the request path)
#
# It installs nothing and stops only the processes it started (by PID), also when interrupted.
# About 10 s per binary, plus the release build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

port="${PANIC_RSS_PORT:-3300}"
count="${PANIC_RSS_COUNT:-100}"
backtrace="${PANIC_RSS_BACKTRACE:-1}"
settle="${PANIC_RSS_SETTLE:-2}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

die() {
    echo "panic_rss.sh: $*" >&2
    exit 1
}

command -v curl >/dev/null 2>&1 || die "curl is not installed (Debian: apt-get install -y curl)."
[[ "$count" =~ ^[0-9]+$ && "$count" -ge 1 ]] || die "PANIC_RSS_COUNT must be at least 1"
[[ "$settle" =~ ^[0-9]+$ ]] || die "PANIC_RSS_SETTLE must be a whole number of seconds"

# shellcheck source=benches/load/common.sh
source "$root/benches/load/common.sh"

server_pid=""
work=""
cleanup() {
    stop_pid "$server_pid"
    server_pid=""
    [[ -z "$work" ]] || rm -rf "$work"
    work=""
}
trap cleanup EXIT
trap 'echo "panic_rss.sh: interrupted" >&2; exit 130' INT TERM

binaries=("$@")
if ((${#binaries[@]} == 0)); then
    echo "==> building the quickstart (release)"
    cargo build --release -p quickstart
    binaries=("$target_dir/release/quickstart")
fi

# "VmRSS RssAnon RssFile" in MiB with one decimal.
rss_of() {
    awk '/^(VmRSS|RssAnon|RssFile):/ { v[$1] = $2 }
         END { printf "%.1f %.1f %.1f", v["VmRSS:"] / 1024, v["RssAnon:"] / 1024, v["RssFile:"] / 1024 }' \
        "/proc/$1/status"
}

# The quickstart's error groups, with the operator token when it made one.
errors_json() {
    local auth=()
    [[ -r "$work/data/admin-token" ]] && auth=(-H "Authorization: Bearer $(cat "$work/data/admin-token")")
    curl -s --max-time 5 "${auth[@]}" "http://127.0.0.1:$port/qiflow/api/errors" || true
}

results=()
for bin in "${binaries[@]}"; do
    [[ -x "$bin" ]] || die "$bin is not an executable"
    bin="$(realpath "$bin")" # it runs from its own working directory
    work="$(mktemp -d)"
    echo "==> $bin (RUST_BACKTRACE=$backtrace, $count panics)"
    (cd "$work" && RUST_BACKTRACE="$backtrace" QIFLOW_ADDR="127.0.0.1:$port" exec "$bin" >"$work/stdout.log" 2>"$work/stderr.log") &
    server_pid=$!
    wait_port "$port" "$server_pid" || die "$bin did not listen on 127.0.0.1:$port (see $work/stderr.log)"
    curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/hello"
    sleep 1
    before="$(rss_of "$server_pid")"
    first_ms="$(curl -s -o /dev/null --max-time 30 -w '%{time_total}' "http://127.0.0.1:$port/panic" | awk '{ printf "%.1f", $1 * 1000 }')"
    sleep "$settle"
    after_one="$(rss_of "$server_pid")"
    : >"$work/times"
    for _ in $(seq 2 "$count"); do
        curl -s -o /dev/null --max-time 30 -w '%{time_total}\n' "http://127.0.0.1:$port/panic" >>"$work/times"
    done
    # The median of the later panicking requests, as curl saw them.
    later_ms="$(sort -n "$work/times" | awk '{ t[NR] = $1 } END { if (NR) printf "%.2f", t[int((NR + 1) / 2)] * 1000; else print "-" }')"
    sleep "$settle"
    after_all="$(rss_of "$server_pid")"
    peak="$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status")"
    frames="$(errors_json | python3 -c '
import json, sys
try:
    groups = json.load(sys.stdin)["groups"]
except Exception:
    print("-"); sys.exit()
trace = next((g.get("stacktrace") for g in groups if g.get("kind") == "panic"), None)
if not trace:
    print("none")
else:
    named = sum(1 for f in trace["frames"] if f.get("function"))
    lines = sum(1 for f in trace["frames"] if f.get("line"))
    print("%s: %d named, %d with lines" % (trace["resolution"], named, lines))
')"
    size_mib="$(awk -v b="$(stat -c %s "$bin")" 'BEGIN { printf "%.1f", b / 1048576 }')"
    results+=("$bin|$size_mib|$before|$after_one|$after_all|$peak|$first_ms|$later_ms|$frames")
    stop_pid "$server_pid"
    server_pid=""
    rm -rf "$work"
    work=""
done

echo
echo "RSS in MiB as VmRSS (anon + file); peak = VmHWM; RUST_BACKTRACE=$backtrace;"
echo "first ms = the first /panic request; later ms = the median of the others (curl's time_total)"
printf '%-32s %6s %20s %20s %20s %6s %8s %8s  %s\n' binary "size" "before any panic" "after 1 panic" "after $count panics" "peak" "first ms" "later ms" "report frames"
for row in "${results[@]}"; do
    IFS='|' read -r bin size before one all peak first later frames <<<"$row"
    fmt() { awk '{ printf "%.1f (%.1f + %.1f)", $1, $2, $3 }' <<<"$1"; }
    printf '%-32s %6s %20s %20s %20s %6s %8s %8s  %s\n' "$(basename "$(dirname "$bin")")/$(basename "$bin")" "$size" \
        "$(fmt "$before")" "$(fmt "$one")" "$(fmt "$all")" "$peak" "$first" "$later" "$frames"
done
