#!/usr/bin/env bash
# qiflow CI, tier 2: the quickstart against real Prometheus tools, all on loopback.
#
#   1. build the quickstart (debug) and start it on a free 127.0.0.1 port in a temp dir;
#   2. send a bounded, known amount of traffic with curl and check every status code;
#   3. `promtool check metrics` on its /metrics (every metric needs HELP and TYPE);
#   4. a real Prometheus server scrapes it every second; its HTTP API must report
#      http_server_requests_total for /users/{id} equal to the requests sent, and up == 1;
#   5. the shipped operations assets: `promtool check rules` and `promtool test rules` on
#      docs/prometheus/, the same rules loaded into that Prometheus (a recording rule must have
#      a value and QiflowHandlerPanics must fire after two /panic requests), and every query of
#      docs/grafana/qiflow-dashboard.json sent to it (each must parse and evaluate);
#   6. SIGTERM to both; the quickstart must exit 0.
#
# Needs curl, python3 and Debian's `prometheus` package (/usr/bin/prometheus, /usr/bin/promtool).
# `.ci/run` installs it; by hand: `apt-get update && apt-get install -y prometheus`.
# Run it from anywhere: `bash .ci/tier2.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

# Bounded traffic: these counts are what Prometheus must report back.
N_HELLO=50
N_USERS=20
N_FAIL=5
N_PANIC=2
N_UNKNOWN=10
N_LOGIN_OK=3
N_LOGIN_BAD=4
JOB=qiflow-quickstart

started=$SECONDS
step() { echo; echo "==> $*"; }
die() { echo "tier2: FAILED: $*" >&2; exit 1; }

# --- tools: a missing one fails with how to get it ------------------------------------------
need() {
    command -v "$1" >/dev/null 2>&1 || die "\`$1\` not found. Install it with: $2"
}
step "checking tools"
need curl "apt-get update && apt-get install -y curl"
need python3 "apt-get update && apt-get install -y python3"
need promtool "apt-get update && apt-get install -y prometheus   (Debian's package ships /usr/bin/promtool)"
need prometheus "apt-get update && apt-get install -y prometheus   (Debian's package ships /usr/bin/prometheus)"
echo "curl:       $(command -v curl)"
echo "promtool:   $(command -v promtool) ($(promtool --version 2>&1 | head -n1))"
echo "prometheus: $(command -v prometheus) ($(prometheus --version 2>&1 | head -n1))"

# --- temp dir, processes, cleanup -----------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-tier2.XXXXXX")
qs_pid=""
prom_pid=""
ok=0

# Sends SIGTERM to a process we started, waits up to $2 seconds, then SIGKILL. Sets `stopped_rc`.
stop_pid() {
    local pid=$1 budget=$2 i
    stopped_rc=""
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < budget * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "tier2: pid $pid still running ${budget}s after SIGTERM: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    set +e
    wait "$pid" 2>/dev/null
    stopped_rc=$?
    set -e
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n $prom_pid ]]; then stop_pid "$prom_pid" 10; fi
    if [[ -n $qs_pid ]]; then stop_pid "$qs_pid" 10; fi
    if [[ $ok != 1 ]]; then
        echo >&2
        echo "tier2: failed (exit $rc); last lines of the logs in $tmp:" >&2
        for f in "$tmp"/quickstart.out "$tmp"/prometheus.log; do
            [[ -f $f ]] || continue
            echo "--- $f" >&2
            tail -n 40 "$f" >&2
        done
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- 1. build and start the quickstart ------------------------------------------------------
step "cargo build -p quickstart"
cargo build -p quickstart
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/debug/quickstart"
[[ -x $bin ]] || die "built the quickstart, but $bin is not there"

qs_port=$(free_port)
qs="http://127.0.0.1:$qs_port"
step "starting the quickstart on $qs (in $tmp)"
mkdir -p "$tmp/qs"
(
    cd "$tmp/qs"
    exec env QIFLOW_ADDR="127.0.0.1:$qs_port" \
        QIFLOW__LOGGING__DIR="$tmp/qs/logs" \
        QIFLOW__LOGGING__STDOUT=false \
        QIFLOW__AUDIT__ENABLED=false \
        "$bin"
) >"$tmp/quickstart.out" 2>&1 </dev/null &
qs_pid=$!
for ((i = 0; ; i++)); do
    kill -0 "$qs_pid" 2>/dev/null || die "the quickstart exited before it answered"
    if curl -fsS --max-time 2 -o /dev/null "$qs/health/live" 2>/dev/null; then break; fi
    ((i < 300)) || die "the quickstart did not answer $qs/health/live within 30 s"
    sleep 0.1
done
echo "pid $qs_pid, /health/live answers 200"

# --- 2. traffic -----------------------------------------------------------------------------
# expect CODE METHOD PATH [curl args...]: one request, its status code must be CODE.
requests=0
expect() {
    local want=$1 method=$2 path=$3 got
    shift 3
    got=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X "$method" "$@" "$qs$path") ||
        die "$method $path: curl failed"
    [[ $got == "$want" ]] || die "$method $path answered $got, expected $want"
    requests=$((requests + 1))
}
step "traffic: $N_HELLO x /hello, $N_USERS x /users/N, $N_FAIL x /fail, $N_PANIC x /panic, $N_UNKNOWN unknown paths, $((N_LOGIN_OK + N_LOGIN_BAD)) x POST /login"
json=(-H 'content-type: application/json')
for ((i = 0; i < N_HELLO; i++)); do expect 200 GET /hello; done
for ((i = 1; i <= N_USERS; i++)); do expect 200 GET "/users/$i"; done
for ((i = 0; i < N_FAIL; i++)); do expect 500 GET /fail; done
for ((i = 0; i < N_PANIC; i++)); do expect 500 GET /panic; done
for ((i = 0; i < N_UNKNOWN; i++)); do expect 404 GET "/no/such/path/$i"; done
for ((i = 0; i < N_LOGIN_OK; i++)); do
    expect 200 POST /login "${json[@]}" --data '{"user":"demo","password":"demo"}'
done
for ((i = 0; i < N_LOGIN_BAD; i++)); do
    expect 401 POST /login "${json[@]}" --data '{"user":"demo","password":"wrong"}'
done
kill -0 "$qs_pid" 2>/dev/null || die "the quickstart died during the traffic"
echo "$requests requests, every status code as expected"

# --- 3. promtool check metrics --------------------------------------------------------------
step "promtool check metrics on $qs/metrics"
curl -fsS --max-time 10 -D "$tmp/metrics.headers" -o "$tmp/metrics.txt" "$qs/metrics" ||
    die "GET /metrics failed"
grep -i '^content-type:' "$tmp/metrics.headers" | tr -d '\r'
echo "$(wc -l <"$tmp/metrics.txt") lines, $(grep -c '^# TYPE ' "$tmp/metrics.txt" || true) metric families"
set +e
promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.out" 2>&1
promtool_rc=$?
set -e
cat "$tmp/promtool.out"
if [[ $promtool_rc != 0 ]]; then
    die "promtool check metrics exited $promtool_rc on the quickstart's /metrics (problems above)"
fi
echo "promtool check metrics: no problems"
# The exposition itself must already count what was sent (Prometheus is checked against it next).
users_line=$(grep -F 'http_server_requests_total{' "$tmp/metrics.txt" |
    grep -F 'route="/users/{id}"' | grep -F 'status="200"' || true)
[[ -n $users_line ]] || die "/metrics has no http_server_requests_total for route=\"/users/{id}\""
echo "$users_line"
[[ ${users_line##* } == "$N_USERS" ]] || die "/metrics counts ${users_line##* } /users requests, expected $N_USERS"

# --- 4. the shipped rules and dashboard, offline -------------------------------------------
rules="$PWD/docs/prometheus/qiflow-rules.yml"
step "promtool check rules / test rules on docs/prometheus"
promtool check rules "$rules" || die "promtool check rules failed on $rules"
promtool test rules docs/prometheus/qiflow-rules.test.yml ||
    die "promtool test rules failed (docs/prometheus/qiflow-rules.test.yml)"
step "docs/grafana/check_dashboard.py"
python3 docs/grafana/check_dashboard.py || die "the Grafana dashboard has problems (above)"
python3 docs/grafana/check_dashboard.py --print-queries --job "$JOB" >"$tmp/dashboard-queries.txt"
echo "$(wc -l <"$tmp/dashboard-queries.txt") dashboard queries to run against Prometheus below"

# --- 5. a real Prometheus server scraping it ------------------------------------------------
prom_port=$(free_port)
prom="http://127.0.0.1:$prom_port"
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $rules
scrape_configs:
  - job_name: $JOB
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$qs_port"]
EOF
step "promtool check config"
promtool check config "$tmp/prometheus.yml"

step "starting prometheus on $prom"
mkdir -p "$tmp/prom-data"
(
    cd "$tmp"
    exec prometheus \
        --config.file="$tmp/prometheus.yml" \
        --storage.tsdb.path="$tmp/prom-data" \
        --web.listen-address="127.0.0.1:$prom_port"
) >"$tmp/prometheus.log" 2>&1 </dev/null &
prom_pid=$!
for ((i = 0; ; i++)); do
    kill -0 "$prom_pid" 2>/dev/null || die "prometheus exited before it was ready"
    if curl -fsS --max-time 2 -o /dev/null "$prom/-/ready" 2>/dev/null; then break; fi
    ((i < 600)) || die "prometheus was not ready at $prom/-/ready within 60 s"
    sleep 0.1
done
echo "pid $prom_pid, /-/ready answers 200"

# query EXPR: prints the values of an instant query's result vector (one per line, none if empty).
query() {
    curl -fsS --max-time 5 -G "$prom/api/v1/query" --data-urlencode "query=$1" |
        python3 -c '
import json, sys
body = json.load(sys.stdin)
if body.get("status") != "success":
    sys.exit("query failed: %s" % body)
for sample in body["data"]["result"]:
    print(sample["value"][1])
'
}

# wait_for EXPR SECONDS WHAT: polls the instant query EXPR until it has a result (then in
# `waited`, its values in `found`), failing with WHAT after SECONDS or if Prometheus dies.
wait_for() {
    local expr=$1 budget=$2 what=$3 deadline=$((SECONDS + $2))
    while :; do
        found=$(query "$expr" 2>/dev/null || true)
        [[ -n $found ]] && break
        kill -0 "$prom_pid" 2>/dev/null || die "prometheus died while waiting for $expr"
        ((SECONDS < deadline)) || die "$what: no result for $expr within $budget s"
        sleep 0.5
    done
    waited=$((budget - (deadline - SECONDS)))
}

users_expr="http_server_requests_total{job=\"$JOB\",route=\"/users/{id}\"}"
step "waiting (up to 60 s) for Prometheus to report $users_expr"
wait_for "$users_expr" 60 "the first scrape"
users_value=$found
echo "after $waited s: $users_expr = $users_value"
[[ $(wc -l <<<"$users_value") == 1 ]] || die "expected one series for $users_expr, got: $users_value"
[[ $users_value == "$N_USERS" ]] || die "Prometheus reports $users_value /users requests, expected $N_USERS"

up_expr="up{job=\"$JOB\"}"
up_value=$(query "$up_expr")
echo "$up_expr = $up_value"
[[ $up_value == 1 ]] || die "$up_expr is '$up_value', expected 1"

unmatched_expr="sum(http_server_requests_total{job=\"$JOB\",route=\"unmatched\"})"
unmatched_value=$(query "$unmatched_expr")
echo "$unmatched_expr = $unmatched_value"
[[ $unmatched_value == "$N_UNKNOWN" ]] ||
    die "Prometheus reports $unmatched_value unmatched requests, expected $N_UNKNOWN (one series, no per-path labels)"

# The recording rules evaluate against qiflow's real series.
rate_expr="qiflow:http_server_requests:rate5m{job=\"$JOB\",route=\"/users/{id}\"}"
step "waiting (up to 30 s) for the recording rule $rate_expr"
wait_for "$rate_expr" 30 "the recording rules (are they loaded? see prometheus.log)"
echo "$rate_expr = $found"

# An alert rule fires on qiflow's real labels: two more panics, seen by Prometheus.
alert_expr="ALERTS{alertname=\"QiflowHandlerPanics\",alertstate=\"firing\",job=\"$JOB\"}"
step "2 x /panic, then waiting (up to 30 s) for $alert_expr"
for ((i = 0; i < 2; i++)); do expect 500 GET /panic; done
wait_for "$alert_expr" 30 "QiflowHandlerPanics did not fire"
echo "$alert_expr is firing after $waited s"

# Every dashboard query parses and evaluates; the request panels have data.
step "running the $(wc -l <"$tmp/dashboard-queries.txt") dashboard queries against Prometheus"
with_data=0
while IFS= read -r expr; do
    result=$(query "$expr") || die "the dashboard query failed: $expr"
    if [[ -n $result ]]; then
        with_data=$((with_data + 1))
    elif [[ $expr == *http_server_requests_total* || $expr == *http_server_request_duration_seconds* ]]; then
        die "the dashboard query returned nothing after traffic: $expr"
    fi
done <"$tmp/dashboard-queries.txt"
echo "every query evaluated; $with_data returned data (the rest show metrics this traffic does not touch)"

# --- 6. shut down ---------------------------------------------------------------------------
step "stopping prometheus (SIGTERM to pid $prom_pid)"
stop_pid "$prom_pid" 20
prom_pid=""
echo "prometheus exited $stopped_rc"

step "stopping the quickstart (SIGTERM to pid $qs_pid): it must exit 0"
stop_pid "$qs_pid" 15
qs_pid=""
[[ $stopped_rc == 0 ]] || die "the quickstart exited $stopped_rc after SIGTERM, expected 0"
echo "quickstart exited 0"

ok=1
echo
echo "==> tier 2 passed in $((SECONDS - started)) s: $requests requests, promtool check metrics clean, Prometheus scraped /users/{id} = $N_USERS and up = 1, rules tested and firing, dashboard queries evaluated"
