#!/usr/bin/env bash
# qiflow CI, tier 2 for scheduled jobs: a shell loop playing cron against the running quickstart,
# checking in with curl, as docs/jobs.md tells a crontab to.
#
#   1. a webhook receiver (Python's http.server) on loopback keeps every alert it is sent;
#   2. the quickstart (release) starts with one job declared from the environment: `pg-dump`,
#      every 6 s, grace 2 s, expect_file <tmp>/backups/db-*.sql.gz of at least 100 bytes, its
#      alerts to the receiver;
#   3. cron, run 1: start, gzip a real file, success          -> the job is `up`;
#      run 2: start, write an empty file, success             -> `failed`, a job_failed alert;
#      then no run at all                                     -> `down` (no second alert: one
#                                                                incident);
#      run 3: start, gzip a real file, success                -> `up`, the alert resolved.
#   /qiflow/api/jobs shows each state; the receiver shows one firing and one resolved alert.
#
# Needs curl and python3. Run it from anywhere: `bash .ci/tier2-jobs.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

die() { echo "tier2-jobs: FAILED: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

# shellcheck source=.ci/lib.sh
source .ci/lib.sh

command -v curl >/dev/null || die "curl not found: apt-get install -y curl"
command -v python3 >/dev/null || die "python3 not found"

target_dir=${CARGO_TARGET_DIR:-target}
if [[ ! -x $target_dir/release/quickstart ]]; then
    step "building the examples and the qiflow CLI (release)"
    release_examples
fi
bin=$(cd "$target_dir/release" && pwd)/quickstart

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-tier2-jobs.XXXXXX")
receiver_pid=""
server_pid=""
cleanup() {
    local rc=$?
    set +e
    stop_pid "$server_pid"
    stop_pid "$receiver_pid"
    if [[ $rc != 0 ]]; then
        echo "tier2-jobs: failed (exit $rc); the end of the quickstart's log:" >&2
        tail -n 30 "$tmp/server.log" >&2
        echo "tier2-jobs: alerts received:" >&2
        cat "$tmp/alerts.jsonl" >&2 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

step "starting the webhook receiver"
hook_port=$(free_port)
python3 - "$hook_port" "$tmp/alerts.jsonl" >"$tmp/receiver.log" 2>&1 <<'EOF' &
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        for alert in json.loads(body).get("alerts", []):
            with open(out, "a") as f:
                f.write(json.dumps({"status": alert["status"], "name": alert["name"],
                                    "job": alert["labels"].get("job")}) + "\n")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
EOF
receiver_pid=$!

step "starting the quickstart with the job pg-dump declared"
port=$(free_port)
mkdir -p "$tmp/backups"
(
    cd "$tmp"
    exec env -u RUST_LOG \
        QIFLOW_ADDR="127.0.0.1:$port" \
        QIFLOW__LOGGING__STDOUT=false \
        QIFLOW__LOGGING__DIR="$tmp/logs" \
        QIFLOW__AUDIT__DIR="$tmp/audit" \
        QIFLOW__ALERTS__GROUP_WAIT=0s \
        QIFLOW__ALERTS__CHANNELS__0__KIND=webhook \
        QIFLOW__ALERTS__CHANNELS__0__NAME=hook \
        QIFLOW__ALERTS__CHANNELS__0__URL="http://127.0.0.1:$hook_port/hook" \
        QIFLOW__JOBS__0__NAME=pg-dump \
        QIFLOW__JOBS__0__EVERY=6s \
        QIFLOW__JOBS__0__GRACE=2s \
        QIFLOW__JOBS__0__EXPECT_FILE="$tmp/backups/db-*.sql.gz" \
        QIFLOW__JOBS__0__MIN_SIZE=100B \
        "$bin"
) >"$tmp/server.log" 2>&1 &
server_pid=$!
for ((i = 0; i < 300; i++)); do
    if curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/health/live" 2>/dev/null &&
        [[ -s $tmp/data/admin-token ]]; then
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || die "the quickstart exited before answering /health/live"
    sleep 0.1
done
((i < 300)) || die "no answer from the quickstart within 30 s"
token=$(cat "$tmp/data/admin-token")
base="http://127.0.0.1:$port/qiflow/api/jobs"

# The crontab's two curl calls around a run.
check_in() { # kind [json body]
    curl -fsS -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
        -d "${2:-}" "$base/pg-dump/$1" -o /dev/null || die "check-in $1 refused"
}
state() {
    curl -fsS -H "Authorization: Bearer $token" "$base" |
        python3 -c 'import json, sys; print(next(j["state"] for j in json.load(sys.stdin) if j["name"] == "pg-dump"))'
}
wait_state() { # state seconds
    local got=""
    for ((i = 0; i < $2 * 10; i++)); do
        got=$(state)
        [[ $got == "$1" ]] && { echo "pg-dump is $got"; return 0; }
        sleep 0.1
    done
    die "pg-dump is $got after $2 s, want $1"
}
alerts() { # status name (a name prefix: "job_" for any of the job's)
    grep -c "\"status\": \"$1\", \"name\": \"$2" "$tmp/alerts.jsonl" 2>/dev/null || true
}
wait_alert() { # status name seconds
    for ((i = 0; i < $3 * 10; i++)); do
        [[ $(alerts "$1" "$2") -ge 1 ]] && { echo "alert $2 $1 received"; return 0; }
        sleep 0.1
    done
    die "no $1 $2 alert within $3 s"
}

step "run 1: a real dump, gzipped"
check_in start
head -c 200000 /dev/urandom | base64 | gzip >"$tmp/backups/db-1.sql.gz"
check_in success "{\"size\": $(stat -c %s "$tmp/backups/db-1.sql.gz"), \"exit_code\": 0}"
wait_state up 5

step "run 2: the dump writes an empty file"
sleep 1
check_in start
: >"$tmp/backups/db-2.sql.gz"
check_in success '{"exit_code": 0}'
wait_state failed 5
wait_alert firing job_failed 10

step "then no run at all: down after two periods plus grace"
wait_state down 20
sleep 2
[[ $(alerts firing job_failed) == 1 && $(alerts firing job_down) == 0 && $(alerts firing job_late) == 0 ]] ||
    die "one incident, one alert: $(cat "$tmp/alerts.jsonl")"

step "run 3: a good dump again"
check_in start
head -c 200000 /dev/urandom | base64 | gzip >"$tmp/backups/db-3.sql.gz"
check_in success
wait_state up 5
# The resolve carries the incident's latest name (job_down by now).
wait_alert resolved job_ 10
[[ $(alerts resolved job_) == 1 ]] || die "one resolve: $(cat "$tmp/alerts.jsonl")"

echo
echo "==> tier2-jobs: passed"
