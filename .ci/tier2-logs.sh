#!/usr/bin/env bash
# qiflow CI, tier 2 for log shipping: Debian's rsyslog tails the quickstart's JSON log file with
# imfile, configured by docs/scaling/rsyslog-qiflow.conf as shipped (only its two paths replaced),
# and every line arrives exactly once, through rotations, a rotation rsyslog sleeps through, a
# restart of the service and a restart of rsyslog.
#
#   0. docs/scaling.md shows each file of docs/scaling/ inline, the same settings without the
#      comments (checked first, for the three shippers' files).
#   1. rsyslogd runs in the foreground (`-n`), started by this script, with a main configuration
#      of its own in a temp dir: its work directory (where imfile keeps its state files) there, then
#      an `include` of the shipped drop-in. The system's rsyslog and /etc are not touched.
#   2. The quickstart (release) writes its JSON log to <tmp>/logs/app.log, rotating at 64 KiB
#      (about every 80 requests), gzipping the archives, keeping all of them for the comparison.
#   3. 300 requests, each with an x-request-id of its own, 3 of them with a 12 KB query (their
#      lines are longer than 8 KiB)                                 -> several rotations;
#      rsyslog paused (SIGSTOP) while qiflow rotates the file rsyslog was reading and compresses it
#      (the renamed file is deleted): the file's last lines are unread until SIGCONT;
#      the quickstart restarted (SIGTERM, the same directories), 200 requests;
#      rsyslog restarted (SIGTERM, the same work directory), 40 requests while it is down and after.
#   4. Once rsyslog has caught up (at most 20 s), both are stopped, and:
#      - every line of qiflow's files (the active file and every archive, gunzipped) is in rsyslog's
#        output exactly once, and nothing else is: the lines missing or repeated are listed;
#      - every output line is a JSON object;
#      - every request sent has exactly one access line in the output;
#      - the lines longer than 8 KiB arrived whole.
#      The same check is then run on a copy of the output with one line removed and another
#      repeated, and must fail.
#
# Needs rsyslog (Debian's package `rsyslog`: /usr/sbin/rsyslogd), curl and python3. Run it from
# anywhere: `bash .ci/tier2-logs.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

die() { echo "tier2-logs: FAILED: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

# shellcheck source=.ci/lib.sh
source .ci/lib.sh

PATH=$PATH:/usr/sbin:/sbin
command -v rsyslogd >/dev/null || die "rsyslogd not found: apt-get install -y rsyslog"
command -v curl >/dev/null || die "curl not found: apt-get install -y curl"
command -v python3 >/dev/null || die "python3 not found"

shipped_conf=docs/scaling/rsyslog-qiflow.conf
[[ -f $shipped_conf ]] || die "$shipped_conf is missing"

target_dir=${CARGO_TARGET_DIR:-target}
if [[ ! -x $target_dir/release/quickstart ]]; then
    step "building the examples and the qiflow CLI (release)"
    release_examples
fi
bin=$(cd "$target_dir/release" && pwd)/quickstart

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-tier2-logs.XXXXXX")
rsyslog_pid=""
server_pid=""
cleanup() {
    local rc=$?
    set +e
    # Output piped into a reader that has gone (`| head`) must not stop the cleanup.
    trap '' PIPE
    stop_pid "$server_pid"
    # A paused rsyslog would never act on SIGTERM.
    [[ -n $rsyslog_pid ]] && kill -CONT "$rsyslog_pid" 2>/dev/null
    stop_pid "$rsyslog_pid"
    if [[ $rc != 0 ]]; then
        echo "tier2-logs: failed (exit $rc)" >&2
        if [[ -s $tmp/server.log ]]; then
            echo "tier2-logs: the end of the quickstart's output:" >&2
            tail -n 20 "$tmp/server.log" >&2
        fi
        if [[ -s $tmp/rsyslogd.log ]]; then
            echo "tier2-logs: rsyslogd's own messages:" >&2
            tail -n 30 "$tmp/rsyslogd.log" >&2
        fi
        if [[ -d $tmp/logs ]]; then
            echo "tier2-logs: the log directory:" >&2
            ls -l "$tmp/logs" >&2
        fi
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

[[ $tmp != *[\|\&\\\"]* ]] || die "the temp dir $tmp has a character the sed below cannot take"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------------------------------------
# The checker: qiflow's files against rsyslog's output.
#   check.py count LOGDIR OUTPUT             prints "<lines in LOGDIR> <lines in OUTPUT>"
#   check.py archived LOGDIR OUTPUT PREFIX   prints how many archived lines have a request id PREFIX…
#   check.py verify LOGDIR OUTPUT IDS        the full check; lists every problem, exits 1 on any
# ---------------------------------------------------------------------------------------------
cat >"$tmp/check.py" <<'EOF'
import collections, gzip, json, os, sys

def complete_lines(data):
    # A line still being written (no newline yet) is not counted.
    return [l for l in data.split(b"\n")[:-1] if l]

def source(logdir):
    """Every line of qiflow's log files: app.log and its archives, each archive once (while it is
    being compressed, both copies exist: the uncompressed one is read)."""
    names = set(os.listdir(logdir))
    files = {}
    for name in sorted(names):
        if name == ".qiflow.lock" or name.endswith(".tmp"):
            continue
        if not name.startswith("app."):
            raise SystemExit(f"unexpected file in the log directory: {name}")
        if name.endswith(".gz"):
            if name[:-3] in names:
                continue
            with gzip.open(os.path.join(logdir, name)) as f:
                files[name] = complete_lines(f.read())
        else:
            with open(os.path.join(logdir, name), "rb") as f:
                files[name] = complete_lines(f.read())
    return files

def output(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return complete_lines(f.read())

mode, logdir, out_path = sys.argv[1:4]
files = source(logdir)
out = output(out_path)
if mode == "count":
    print(sum(len(v) for v in files.values()), len(out))
    sys.exit(0)
if mode == "archived":
    # The lines of archives whose request id starts with argv[4].
    print(sum(1 for name, lines in files.items() if name != "app.log" for line in lines
              if json.loads(line).get("request_id", "").startswith(sys.argv[4])))
    sys.exit(0)

ids = [l.strip() for l in open(sys.argv[4]) if l.strip()]
problems = []
where = {}
want = collections.Counter()
for name, lines in files.items():
    for i, line in enumerate(lines, 1):
        want[line] += 1
        where.setdefault(line, f"{name}:{i}")
got = collections.Counter(out)

def show(line):
    text = line.decode("utf-8", "replace")
    return text if len(text) <= 160 else text[:160] + f"… ({len(line)} bytes)"

for line, n in sorted((want - got).items(), key=lambda kv: where[kv[0]]):
    problems.append(f"missing from the output ({n}x): {where[line]}: {show(line)}")
for line, n in (got - want).items():
    if line in want:
        problems.append(f"in the output {got[line]} times, {want[line]} in qiflow's files: "
                        f"{where[line]}: {show(line)}")
    else:
        problems.append(f"in the output, in none of qiflow's files: {show(line)}")

access = collections.Counter()
for i, line in enumerate(out, 1):
    try:
        record = json.loads(line)
    except ValueError as e:
        problems.append(f"output line {i} is not JSON ({e}): {show(line)}")
        continue
    if not isinstance(record, dict):
        problems.append(f"output line {i} is not a JSON object: {show(line)}")
        continue
    if record.get("target") == "qiflow::access" and "request_id" in record:
        access[record["request_id"]] += 1
for rid in ids:
    if access[rid] != 1:
        problems.append(f"request {rid}: {access[rid]} access lines in the output, want 1")

long_want = sum(n for line, n in want.items() if len(line) > 8192)
long_got = sum(1 for line in out if len(line) > 8192)
if long_want < 3:
    problems.append(f"only {long_want} lines over 8 KiB in qiflow's files, want at least 3")
if long_got != long_want:
    problems.append(f"{long_got} lines over 8 KiB in the output, {long_want} in qiflow's files")

archives = [n for n in files if n != "app.log"]
print(f"qiflow's files: app.log and {len(archives)} archives, {sum(want.values())} lines; "
      f"rsyslog's output: {len(out)} lines; {len(ids)} requests sent; "
      f"{long_got} lines over 8 KiB")
for p in problems[:40]:
    print("  " + p)
if len(problems) > 40:
    print(f"  … and {len(problems) - 40} more")
sys.exit(1 if problems else 0)
EOF

# ---------------------------------------------------------------------------------------------
# docs/scaling.md shows each file of docs/scaling/ inline: the same settings, without comments.
# ---------------------------------------------------------------------------------------------
step "docs/scaling.md shows the configurations of docs/scaling/ as they are"
python3 - docs/scaling.md docs/scaling/rsyslog-qiflow.conf docs/scaling/vector.toml \
    docs/scaling/fluent-bit.yaml <<'EOF' || die "docs/scaling.md and docs/scaling/ differ (above)"
import os, sys
doc = open(sys.argv[1]).read()
def settings(text):
    return [l.rstrip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
bad = False
for path in sys.argv[2:]:
    link = f"](scaling/{os.path.basename(path)})"
    at = doc.find(link)
    start = doc.find("```", at)
    if at < 0 or start < 0:
        print(f"docs/scaling.md: no link to scaling/{os.path.basename(path)} followed by a code block")
        bad = True
        continue
    start = doc.index("\n", start) + 1
    shown = settings(doc[start:doc.index("```", start)])
    if shown != settings(open(path).read()):
        print(f"docs/scaling.md: the block after {link[1:]} is not {path} without its comments")
        bad = True
sys.exit(1 if bad else 0)
EOF
echo "the three blocks match their files"

# ---------------------------------------------------------------------------------------------
# rsyslog: a main configuration like Debian's /etc/rsyslog.conf (an input module loaded, the work
# directory set, then the drop-in included), and the drop-in as shipped, its paths replaced.
# ---------------------------------------------------------------------------------------------
step "rsyslog: $shipped_conf with its paths replaced"
mkdir -p "$tmp/rsyslog-work" "$tmp/logs" "$tmp/shipped"
out="$tmp/shipped/qiflow.jsonl"
sed -e "s|/var/lib/qiflow/logs/app.log|$tmp/logs/app.log|g" \
    -e "s|/var/log/qiflow/shipped.jsonl|$out|g" \
    "$shipped_conf" >"$tmp/rsyslog-qiflow.conf"
if grep -nE '"/(var|etc|srv|opt|run|home)/' "$tmp/rsyslog-qiflow.conf" >&2; then
    die "$shipped_conf has a path this test does not replace (above): replace it here too"
fi
grep -qF "File=\"$tmp/logs/app.log\"" "$tmp/rsyslog-qiflow.conf" ||
    die "$shipped_conf has no File=\"/var/lib/qiflow/logs/app.log\" for the test to replace"
grep -qF "file=\"$out\"" "$tmp/rsyslog-qiflow.conf" ||
    die "$shipped_conf has no file=\"/var/log/qiflow/shipped.jsonl\" for the test to replace"
cat >"$tmp/rsyslog.conf" <<EOF
# Like Debian's /etc/rsyslog.conf: an input module first (here without the system's /dev/log),
# the work directory, then the drop-in.
module(load="imuxsock" SysSock.Use="off")
global(workDirectory="$tmp/rsyslog-work")
include(file="$tmp/rsyslog-qiflow.conf")
EOF
rsyslogd -N1 -f "$tmp/rsyslog.conf" >"$tmp/rsyslogd-check.log" 2>&1 || {
    cat "$tmp/rsyslogd-check.log" >&2
    die "rsyslogd -N1 rejects the configuration"
}
if grep -iE 'error|warning' "$tmp/rsyslogd-check.log" >&2; then
    die "rsyslogd -N1 complains about the configuration (above)"
fi

start_rsyslog() {
    rm -f "$tmp/rsyslogd.pid"
    rsyslogd -n -f "$tmp/rsyslog.conf" -i "$tmp/rsyslogd.pid" >>"$tmp/rsyslogd.log" 2>&1 &
    rsyslog_pid=$!
    for ((i = 0; i < 100; i++)); do
        [[ -s $tmp/rsyslogd.pid ]] && return 0
        kill -0 "$rsyslog_pid" 2>/dev/null || die "rsyslogd exited at start"
        sleep 0.1
    done
    die "rsyslogd did not write its pid file within 10 s"
}
stop_rsyslog() {
    stop_pid "$rsyslog_pid"
    rsyslog_pid=""
}
start_rsyslog
echo "rsyslogd is pid $rsyslog_pid"

# ---------------------------------------------------------------------------------------------
# The quickstart, and the traffic.
# ---------------------------------------------------------------------------------------------
port=$(free_port)
start_server() {
    (
        cd "$tmp"
        exec env -u RUST_LOG \
            QIFLOW_ADDR="127.0.0.1:$port" \
            QIFLOW__LOGGING__STDOUT=false \
            QIFLOW__LOGGING__DIR="$tmp/logs" \
            QIFLOW__LOGGING__MAX_SIZE=64KiB \
            QIFLOW__LOGGING__MAX_BACKUPS=1000 \
            QIFLOW__LOGGING__COMPRESS=gzip \
            QIFLOW__SERVICE__STATE_DIR="$tmp/data" \
            QIFLOW__AUDIT__DIR="$tmp/audit" \
            "$bin"
    ) >>"$tmp/server.log" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 300; i++)); do
        curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/health/live" 2>/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || die "the quickstart exited before answering /health/live"
        sleep 0.1
    done
    die "no answer from the quickstart within 30 s"
}
stop_server() {
    stop_pid "$server_pid"
    server_pid=""
}

# send PREFIX FIRST COUNT [QUERY]: GET /hello COUNT times in one curl, with the request ids
# PREFIX-FIRST … (kept in ids.txt); every answer must be 200.
send() {
    local prefix=$1 first=$2 count=$3 query=${4:-} k id
    : >"$tmp/curl.cfg"
    for ((k = first; k < first + count; k++)); do
        printf -v id '%s-%04d' "$prefix" "$k"
        echo "$id" >>"$tmp/ids.txt"
        ((k > first)) && echo next >>"$tmp/curl.cfg"
        printf 'url = "http://127.0.0.1:%s/hello%s"\nheader = "x-request-id: %s"\n' \
            "$port" "$query" "$id" >>"$tmp/curl.cfg"
        printf 'output = "/dev/null"\nmax-time = 10\nwrite-out = "%%{http_code}\\n"\n' >>"$tmp/curl.cfg"
    done
    local ok
    ok=$(curl -sS -K "$tmp/curl.cfg" | grep -c '^200$' || true)
    [[ $ok == "$count" ]] || die "$prefix: $ok of $count requests answered 200"
}

# Archives on disk: rotated files, compressed or not yet (each counted once).
archives() {
    local n=0 f
    for f in "$tmp"/logs/app.*.log "$tmp"/logs/app.*.log.gz; do
        [[ -e $f ]] || continue
        [[ $f == *.log.gz && -e ${f%.gz} ]] && continue
        n=$((n + 1))
    done
    echo "$n"
}
uncompressed() {
    local f n=0
    for f in "$tmp"/logs/app.*.log; do
        [[ -e $f ]] && n=$((n + 1))
    done
    echo "$n"
}

# wait_shipped SECONDS: until rsyslog's output has as many lines as qiflow's files.
wait_shipped() {
    local counts i src=0 got=0
    for ((i = 0; i < $1 * 5; i++)); do
        counts=$(python3 "$tmp/check.py" count "$tmp/logs" "$out") || die "cannot read the lines (above)"
        read -r src got <<<"$counts"
        ((got >= src)) && { echo "rsyslog has shipped all $src lines"; return 0; }
        sleep 0.2
    done
    echo "tier2-logs: after $1 s, rsyslog's output has $got lines, qiflow's files $src" >&2
    python3 "$tmp/check.py" verify "$tmp/logs" "$out" "$tmp/ids.txt" >&2 || true
    die "rsyslog did not ship every line within $1 s"
}

step "starting the quickstart: JSON log in $tmp/logs, rotation at 64 KiB, gzip"
: >"$tmp/ids.txt"
start_server

step "300 requests, 3 of them with lines over 8 KiB"
send logs-a 0 150
send logs-long 0 3 "?pad=$(printf 'x%.0s' {1..12000})"
send logs-a 150 150
(($(archives) >= 2)) || die "no rotation during 300 requests (archives: $(archives))"
echo "qiflow rotated $(archives) times"
wait_shipped 20

step "rsyslog paused while qiflow rotates the file it was reading and deletes it (compressed)"
before=$(archives)
kill -STOP "$rsyslog_pid"
sent=0
while (($(archives) == before)); do
    ((sent < 400)) || die "no rotation within 400 requests"
    send logs-b "$sent" 5
    sent=$((sent + 5))
done
# The compression thread runs under SCHED_IDLE: on a busy machine it may wait a little.
for ((i = 0; i < 300; i++)); do
    (($(uncompressed) == 0)) && break
    sleep 0.1
done
(($(uncompressed) == 0)) || die "the rotated file was not compressed within 30 s"
unread=$(python3 "$tmp/check.py" archived "$tmp/logs" "$out" logs-b-) || die "cannot read the archives (above)"
((unread > 0)) || die "no line written while rsyslog was paused went into the rotated file"
echo "$sent requests while rsyslog was paused; $unread of their lines went into the file rotated" \
    "meanwhile, which is now gzipped and its uncompressed copy deleted"
kill -CONT "$rsyslog_pid"
wait_shipped 20

step "restarting the quickstart (SIGTERM, the same directories), then 200 requests"
stop_server
start_server
send logs-c 0 200
wait_shipped 20

step "restarting rsyslog (SIGTERM, the same work directory) with no rotation while it is down"
# A fresh active file first, so that 20 requests cannot fill it while rsyslog is down.
before=$(archives)
sent=0
while (($(archives) == before)); do
    ((sent < 400)) || die "no rotation within 400 requests"
    send logs-d "$sent" 1
    sent=$((sent + 1))
done
wait_shipped 20
stop_rsyslog
send logs-e 0 20
(($(archives) == before + 1)) || die "qiflow rotated while rsyslog was down: this test needs it not to"
start_rsyslog
send logs-e 20 20
wait_shipped 20

step "stopping the quickstart and rsyslog; checking the output"
stop_server
wait_shipped 20
stop_rsyslog
python3 "$tmp/check.py" verify "$tmp/logs" "$out" "$tmp/ids.txt" ||
    die "rsyslog's output is not every line of qiflow's files exactly once (above)"

step "the same check on a copy with one line removed and another repeated must fail"
python3 - "$out" "$tmp/broken.jsonl" <<'EOF'
import sys
lines = open(sys.argv[1], "rb").read().split(b"\n")[:-1]
broken = lines[:10] + lines[11:] + [lines[20]]
open(sys.argv[2], "wb").write(b"".join(l + b"\n" for l in broken))
EOF
if python3 "$tmp/check.py" verify "$tmp/logs" "$tmp/broken.jsonl" "$tmp/ids.txt" >"$tmp/broken.txt"; then
    cat "$tmp/broken.txt" >&2
    die "the check passed on a broken copy of the output"
fi
if ! grep -q 'missing from the output' "$tmp/broken.txt" ||
    ! grep -q 'in the output 2 times' "$tmp/broken.txt"; then
    cat "$tmp/broken.txt" >&2
    die "the check did not name the missing and the repeated line"
fi
echo "it fails, naming both lines"

echo
echo "==> tier2-logs: passed"
