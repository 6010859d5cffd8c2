#!/usr/bin/env bash
# qiflow CI, tier 2 for a fleet: three instances of the quickstart behind one real Prometheus,
# a real Alertmanager cluster of two and one real PostgreSQL, all on loopback.
#
#   1. PostgreSQL (initdb/pg_ctl from the machine image), two Alertmanagers clustered with each
#      other (--cluster.listen-address / --cluster.peer) sending to a webhook receiver, and
#      three quickstarts (`web-1`..`web-3`: each its own directory, its own `[service] instance`,
#      the audit sink in the one PostgreSQL, an alertmanager channel with both members' URLs);
#      Prometheus scrapes the three through `file_sd` with the shipped rules loaded;
#   2. traffic to all three: Prometheus sees three targets up, and the per-instance and summed
#      request counts equal what was sent; the series each instance exports are counted;
#   3. `/fail` on every instance at once: the cluster sends one notification for the group,
#      holding the three instances' alerts (not one per instance, nor one per Alertmanager);
#   4. faults:
#      - web-3 is SIGKILLed under login traffic: every login it answered (each answered only once
#        its audit record is stored) is in PostgreSQL; Prometheus marks it down, and the shipped
#        QiflowInstanceDown fires (its `for: 2m` is waited out while the rest runs);
#      - PostgreSQL restarts under login traffic on web-1 and web-2: every answered login is in
#        the table exactly once;
#      - one Alertmanager stopped: `/panic` on the living instances still gives one notification;
#   5. web-3 restarts on its directory (the same instance, its chain continued); SIGTERM to all
#      three (exit 0, chains sealed); `qiflow audit verify --postgres` verifies the three chains.
#
# Needs curl, python3, Debian's prometheus and prometheus-alertmanager, and PostgreSQL's server
# binaries (`.ci/run` installs them). Run it from anywhere: `bash .ci/tier2-fleet.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
# shellcheck source=.ci/lib.sh
source .ci/lib.sh

die() { echo "tier2-fleet: FAILED: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }
started=$SECONDS

AM=/usr/bin/prometheus-alertmanager
for tool in curl python3 prometheus; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y curl python3 prometheus"
done
[[ -x $AM ]] || die "$AM not found: apt-get install -y prometheus-alertmanager"
pg_bindir >/dev/null || die "no PostgreSQL server binaries"

target_dir=${CARGO_TARGET_DIR:-target}
step "building the examples and the qiflow CLI (release)"
release_examples
bin=$(cd "$target_dir/release" && pwd)/quickstart
cli=$(cd "$target_dir/release" && pwd)/qiflow

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-tier2-fleet.XXXXXX")
chmod 755 "$tmp" # PostgreSQL runs as another user and reaches its cluster through it
declare -A pid=()
cleanup() {
    local rc=$?
    set +e
    for name in "${!pid[@]}"; do
        [[ -n ${pid[$name]} ]] && kill -KILL "${pid[$name]}" 2>/dev/null
    done
    for name in "${!pid[@]}"; do
        [[ -n ${pid[$name]} ]] && wait "${pid[$name]}" 2>/dev/null
    done
    pg_stop "$tmp/pg" immediate
    if [[ $rc != 0 ]]; then
        for f in "$tmp"/web-*/out.log "$tmp"/am-*.log "$tmp"/prometheus.log "$tmp"/pg/server.log; do
            [[ -f $f ]] || continue
            echo "--- $f (last 25 lines)" >&2
            tail -n 25 "$f" >&2
        done
        echo "--- notifications received" >&2
        cat "$tmp/hook.jsonl" >&2 2>/dev/null
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_http() { # URL WHAT PIDNAME
    local i
    for ((i = 0; i < 300; i++)); do
        curl -fsS --max-time 1 -o /dev/null "$1" 2>/dev/null && return 0
        [[ -z ${3:-} ]] || kill -0 "${pid[$3]}" 2>/dev/null || die "$2 exited at start"
        sleep 0.1
    done
    die "$2 did not answer $1 within 30 s"
}
# query EXPR: the first value of an instant query to Prometheus ("" when none).
query() {
    curl -fsS --max-time 5 "$prom/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}

# --- 1. the engines -------------------------------------------------------------------------
step "PostgreSQL"
pg_port=$(free_port)
pg_init "$tmp/pg" || die "initdb failed"
pg_start "$tmp/pg" "$pg_port" || die "PostgreSQL did not start"
pg_url="postgres://qiflow@127.0.0.1:$pg_port/postgres"
psql_() { "$(pg_bindir)/psql" -tA -h 127.0.0.1 -p "$pg_port" -U qiflow -d postgres -c "$1"; }
echo "on 127.0.0.1:$pg_port ($("$(pg_bindir)/postgres" --version))"

step "a webhook receiver and two clustered Alertmanagers"
hook_port=$(free_port)
python3 - "$hook_port" "$tmp/hook.jsonl" >"$tmp/hook.log" 2>&1 <<'EOF' &
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        alerts = [{"alertname": a["labels"].get("alertname"), "instance": a["labels"].get("instance"),
                   "status": a["status"]} for a in body.get("alerts", [])]
        with open(out, "a") as f:
            f.write(json.dumps({"group": body.get("groupLabels", {}), "alerts": alerts}) + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
EOF
pid[hook]=$!
touch "$tmp/hook.jsonl"
cat >"$tmp/alertmanager.yml" <<YAML
route:
  receiver: hook
  group_by: [alertname, service, route]
  group_wait: 4s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:$hook_port/
        send_resolved: false
YAML
am_port=() am_cluster=()
for n in 0 1; do am_port[n]=$(free_port); am_cluster[n]=$(free_port); done
for n in 0 1; do
    other=$((1 - n))
    $AM --config.file="$tmp/alertmanager.yml" --storage.path="$tmp/am-$n" \
        --web.listen-address="127.0.0.1:${am_port[n]}" \
        --cluster.listen-address="127.0.0.1:${am_cluster[n]}" \
        --cluster.advertise-address="127.0.0.1:${am_cluster[n]}" \
        --cluster.peer="127.0.0.1:${am_cluster[other]}" \
        --cluster.peer-timeout=3s --cluster.gossip-interval=100ms --cluster.pushpull-interval=2s \
        >"$tmp/am-$n.log" 2>&1 &
    pid[am$n]=$!
done
for n in 0 1; do wait_http "http://127.0.0.1:${am_port[n]}/-/ready" "Alertmanager $n" "am$n"; done
for ((i = 0; i < 100; i++)); do
    peers=$(curl -fsS "http://127.0.0.1:${am_port[0]}/api/v2/status" |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)["cluster"]["peers"]))')
    [[ $peers == 2 ]] && break
    sleep 0.1
done
[[ $peers == 2 ]] || die "the Alertmanagers did not form a cluster of two (peers: $peers)"
echo "cluster of 2 on 127.0.0.1:${am_port[0]} and :${am_port[1]}"

step "three quickstarts: web-1, web-2, web-3"
declare -A port=()
start_instance() { # NAME
    local name=$1 dir="$tmp/$1"
    mkdir -p "$dir"
    [[ -n ${port[$name]:-} ]] || port[$name]=$(free_port)
    cat >"$dir/qiflow.toml" <<TOML
[service]
name = "fleet"
environment = "ci"
instance = "$name"
[logging]
stdout = false
[audit]
sink = "postgres"
postgres_url = "$pg_url"
flush_interval = "20ms"
[alerts]
group_wait = "0s"
[[alerts.channels]]
name = "am"
kind = "alertmanager"
urls = ["http://127.0.0.1:${am_port[0]}", "http://127.0.0.1:${am_port[1]}"]
TOML
    (cd "$dir" && exec env QIFLOW_CONFIG="$dir/qiflow.toml" QIFLOW_ADDR="127.0.0.1:${port[$name]}" \
        RUST_BACKTRACE=0 "$bin") >>"$dir/out.log" 2>&1 </dev/null &
    pid[$name]=$!
    wait_http "http://127.0.0.1:${port[$name]}/health/live" "$name" "$name"
}
for name in web-1 web-2 web-3; do start_instance "$name"; done
echo "web-1 :${port[web-1]}, web-2 :${port[web-2]}, web-3 :${port[web-3]}"

step "Prometheus scraping the three through file_sd, with the shipped rules"
prom_port=$(free_port)
prom="http://127.0.0.1:$prom_port"
python3 - "$tmp/targets.json" "${port[web-1]}" "${port[web-2]}" "${port[web-3]}" <<'EOF'
import json, sys
out, ports = sys.argv[1], sys.argv[2:]
json.dump([{"targets": [f"127.0.0.1:{p}" for p in ports], "labels": {}}], open(out, "w"))
EOF
cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/docs/prometheus/qiflow-rules.yml
scrape_configs:
  - job_name: fleet
    file_sd_configs:
      - files: [$tmp/targets.json]
        refresh_interval: 1s
YAML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prom-data" \
    --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pid[prometheus]=$!
wait_http "$prom/-/ready" Prometheus prometheus

# --- 2. traffic: counted per instance and in all -------------------------------------------
step "traffic: 30 x /hello and 10 x /users/N on each, 3 logins each"
for name in web-1 web-2 web-3; do
    base="http://127.0.0.1:${port[$name]}"
    for ((i = 0; i < 30; i++)); do curl -fsS -o /dev/null "$base/hello" || die "$name /hello"; done
    for ((i = 1; i <= 10; i++)); do curl -fsS -o /dev/null "$base/users/$i" || die "$name /users"; done
    for ((i = 0; i < 3; i++)); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
            --data '{"user":"demo","password":"demo"}' "$base/login")
        [[ $code == 200 ]] || die "$name POST /login answered $code"
    done
done
for ((i = 0; i < 100; i++)); do
    total=$(query 'sum(http_server_requests_total{job="fleet",route="/hello"})')
    up=$(query 'sum(up{job="fleet"})')
    [[ $total == 90 && $up == 3 ]] && break
    sleep 0.2
done
[[ $up == 3 ]] || die "Prometheus sees $up of 3 targets up"
[[ $total == 90 ]] || die "Prometheus counts $total /hello requests in all, 90 were sent"
for name in web-1 web-2 web-3; do
    got=$(query "sum(http_server_requests_total{job=\"fleet\",route=\"/hello\",instance=\"127.0.0.1:${port[$name]}\"})")
    [[ $got == 30 ]] || die "Prometheus counts $got /hello requests for $name, 30 were sent"
    id=$(query "count(qiflow_build_info{job=\"fleet\",instance=\"127.0.0.1:${port[$name]}\",service_instance_id=\"$name\"})")
    [[ $id == 1 ]] || die "qiflow_build_info of $name lacks service_instance_id=\"$name\""
done
echo "3 targets up; /hello: 30 per instance, 90 in all; qiflow_build_info names each instance"
series=$(query "count({job=\"fleet\",instance=\"127.0.0.1:${port[web-1]}\"})")
echo "series per instance after this traffic (web-1): $series"

# --- 3. one notification per group from the cluster -----------------------------------------
# notifications ALERTNAME: how many notifications the receiver got for that alert's group.
notifications() {
    python3 - "$tmp/hook.jsonl" "$1" <<'EOF'
import json, sys
n = sum(1 for l in open(sys.argv[1]) if l.strip() and json.loads(l)["group"].get("alertname") == sys.argv[2])
print(n)
EOF
}
alerts_in() { # ALERTNAME: the instances in that group's notifications, sorted
    python3 - "$tmp/hook.jsonl" "$1" <<'EOF'
import json, sys
seen = sorted({a["instance"] for l in open(sys.argv[1]) if l.strip()
               for a in json.loads(l)["alerts"] if a["alertname"] == sys.argv[2]})
print(" ".join(seen))
EOF
}
expect_one_notification() { # ALERTNAME INSTANCES...
    local name=$1 i
    shift
    for ((i = 0; i < 300; i++)); do
        [[ $(notifications "$name") -ge 1 ]] && break
        sleep 0.1
    done
    [[ $(notifications "$name") -ge 1 ]] || die "no notification for $name within 30 s"
    # The other member would send by now (its peer timeout is 3 s) if the cluster did not
    # deduplicate.
    sleep 8
    [[ $(notifications "$name") == 1 ]] || die "$(notifications "$name") notifications for the $name group, expected 1"
    [[ $(alerts_in "$name") == "$*" ]] || die "the $name notification holds instances '$(alerts_in "$name")', expected '$*'"
    echo "one notification for the $name group, with the alerts of: $*"
}
step "/fail on every instance at once"
fails=()
for name in web-1 web-2 web-3; do
    curl -sS -o /dev/null "http://127.0.0.1:${port[$name]}/fail" &
    fails+=($!)
done
wait "${fails[@]}"
expect_one_notification error web-1 web-2 web-3

# --- 4. faults ------------------------------------------------------------------------------
# logins NAME PREFIX COUNT: wrong-password logins, one per user PREFIX-i; writes the users whose
# login was answered 401 (its audit record stored) to $tmp/acked.PREFIX. Stops at the first
# connection failure (the instance died).
logins() {
    local base="http://127.0.0.1:${port[$1]}" prefix=$2 count=$3 i code
    : >"$tmp/acked.$prefix"
    for ((i = 0; i < count; i++)); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 40 -H 'content-type: application/json' \
            --data "{\"user\":\"$prefix-$i\",\"password\":\"x\"}" "$base/login" 2>/dev/null) || break
        [[ $code == 401 ]] && echo "$prefix-$i" >>"$tmp/acked.$prefix"
    done
}
# stored PREFIX: checks every acknowledged login of PREFIX is in the table exactly once.
stored() {
    local prefix=$1 acked missing dup
    acked=$(wc -l <"$tmp/acked.$prefix")
    ((acked > 0)) || die "no login of $prefix was answered"
    psql_ "SELECT actor FROM qiflow_audit WHERE actor LIKE '$prefix-%'" | sort >"$tmp/stored.$prefix"
    missing=$(sort "$tmp/acked.$prefix" | comm -23 - <(sort -u "$tmp/stored.$prefix") | head -5)
    [[ -z $missing ]] || die "answered logins missing from PostgreSQL: $missing"
    dup=$(uniq -d "$tmp/stored.$prefix" | head -5)
    [[ -z $dup ]] || die "logins stored twice: $dup"
    echo "$prefix: $acked answered logins, every one stored once"
}

step "SIGKILL to web-3 under login traffic"
logins web-3 k3 100000 &
load=$!
sleep 1.5
kill -KILL "${pid[web-3]}"
wait "${pid[web-3]}" 2>/dev/null || true
pid[web-3]=""
killed_at=$SECONDS
wait "$load" || true
stored k3
for ((i = 0; i < 100; i++)); do
    [[ $(query "up{job=\"fleet\",instance=\"127.0.0.1:${port[web-3]}\"}") == 0 ]] && break
    sleep 0.2
done
[[ $(query "up{job=\"fleet\",instance=\"127.0.0.1:${port[web-3]}\"}") == 0 ]] ||
    die "Prometheus does not mark web-3 down"
echo "Prometheus: up == 0 for web-3"

step "PostgreSQL restarted under login traffic on web-1 and web-2"
logins web-1 p1 150 &
l1=$!
logins web-2 p2 150 &
l2=$!
sleep 1
pg_stop "$tmp/pg" fast
sleep 2
pg_start "$tmp/pg" "$pg_port" || die "PostgreSQL did not start again"
wait "$l1" "$l2"
stored p1
stored p2

step "one Alertmanager stopped: /panic on web-1 and web-2"
stop_pid "${pid[am0]}"
pid[am0]=""
for name in web-1 web-2; do curl -sS -o /dev/null "http://127.0.0.1:${port[$name]}/panic" || true; done
expect_one_notification panic web-1 web-2

step "QiflowInstanceDown (the shipped rule, for: 2m) fires for web-3"
for ((i = 0; i < 200; i++)); do
    state=$(curl -fsS "$prom/api/v1/alerts" | python3 -c "
import json, sys
for a in json.load(sys.stdin)['data']['alerts']:
    if a['labels'].get('alertname') == 'QiflowInstanceDown' and a['labels'].get('instance') == '127.0.0.1:${port[web-3]}':
        print(a['state'])")
    [[ $state == firing ]] && break
    sleep 1
done
[[ $state == firing ]] || die "QiflowInstanceDown is '${state:-absent}' $((SECONDS - killed_at)) s after web-3 died"
echo "firing $((SECONDS - killed_at)) s after web-3 died"

# --- 5. restart, stop, verify --------------------------------------------------------------
step "web-3 restarts on its directory; SIGTERM to all three"
start_instance web-3
curl -fsS -o /dev/null -H 'content-type: application/json' --data '{"user":"demo","password":"demo"}' \
    "http://127.0.0.1:${port[web-3]}/login" || die "web-3 login after its restart"
for name in web-1 web-2 web-3; do
    kill -TERM "${pid[$name]}"
    rc=0
    wait "${pid[$name]}" || rc=$?
    pid[$name]=""
    [[ $rc == 0 ]] || die "$name exited $rc after SIGTERM"
done
echo "all three exited 0"

step "qiflow audit verify --postgres"
QIFLOW__AUDIT__POSTGRES_URL=$pg_url "$cli" audit verify --postgres | tee "$tmp/verify.txt"
grep -q "ok: .*: 3 chains" "$tmp/verify.txt" || die "verify did not report 3 chains"
chains=$(psql_ "SELECT string_agg(DISTINCT instance, ' ' ORDER BY instance) FROM qiflow_audit")
[[ $chains == "web-1 web-2 web-3" ]] || die "the table holds the chains '$chains'"

echo
echo "tier2-fleet: OK ($((SECONDS - started)) s)"
