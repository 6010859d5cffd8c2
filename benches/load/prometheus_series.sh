#!/usr/bin/env bash
# What an active series costs a real Prometheus (Debian's), measured: one target on loopback
# exposes SERIES series shaped like qiflow's request histogram (labels method, route, status, le),
# scraped every second for WARMUP seconds; then Prometheus's own resident memory and
# `prometheus_tsdb_head_series` are read, against a run with an empty target. The difference
# divided by the series is the memory per active series that docs/scaling.md sizes a fleet with.
#
#   bash benches/load/prometheus_series.sh              # 20,000 and 200,000 series
#   SERIES="50000" WARMUP=60 bash benches/load/prometheus_series.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=.ci/lib.sh
source .ci/lib.sh

SERIES=${SERIES:-"20000 200000"}
WARMUP=${WARMUP:-45}
command -v prometheus >/dev/null || { echo "prometheus not found: apt-get install -y prometheus" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-prom-series.XXXXXX")
target_pid="" prom_pid=""
cleanup() {
    stop_pid "$prom_pid"
    stop_pid "$target_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# measure N: prints "N head_series rss_bytes".
measure() {
    local n=$1 tport pport i
    tport=$(free_port)
    pport=$(free_port)
    python3 - "$tport" "$n" <<'PY' &
import http.server, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
buckets = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10", "+Inf"]
lines = ["# TYPE http_server_request_duration_seconds histogram"]
combos, k = [], 0
# 17 series per (method, route, status), as qiflow's histogram has.
while len(combos) * 17 < n:
    combos.append((["GET", "POST"][k % 2], f"/r{k // 6}", ["200", "404", "500"][(k // 2) % 3]))
    k += 1
v = 1
for m, r, s in combos:
    for b in buckets:
        lines.append(f'http_server_request_duration_seconds_bucket{{method="{m}",route="{r}",status="{s}",le="{b}"}} {v}')
    lines.append(f'http_server_request_duration_seconds_sum{{method="{m}",route="{r}",status="{s}"}} 1.5')
    lines.append(f'http_server_request_duration_seconds_count{{method="{m}",route="{r}",status="{s}"}} {v}')
body = ("\n".join(lines) + "\n").encode() if n else b""
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
    target_pid=$!
    cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: synthetic
    static_configs:
      - targets: ["127.0.0.1:$tport"]
YAML
    rm -rf "$tmp/data"
    prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
        --web.listen-address="127.0.0.1:$pport" >"$tmp/prometheus.log" 2>&1 &
    prom_pid=$!
    for ((i = 0; i < 100; i++)); do
        curl -fsS -o /dev/null "http://127.0.0.1:$pport/-/ready" 2>/dev/null && break
        sleep 0.1
    done
    sleep "$WARMUP"
    python3 - "$pport" "$n" "$prom_pid" <<'PY'
import sys, urllib.request
port, n, pid = sys.argv[1], sys.argv[2], sys.argv[3]
# Prometheus's own exposition (it does not scrape itself here).
own = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
head = next(float(l.split()[-1]) for l in own.splitlines() if l.startswith("prometheus_tsdb_head_series "))
rss = int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) * 1024
print(n, int(head), rss)
PY
    stop_pid "$prom_pid"
    prom_pid=""
    stop_pid "$target_pid"
    target_pid=""
}

prometheus --version 2>&1 | head -n1
echo "warm-up: ${WARMUP}s of scrapes every second"
base=$(measure 0)
read -r _ base_series base_rss <<<"$base"
printf '%-10s %-12s %-14s %s\n' series head_series rss_MiB "bytes per series above the empty run"
printf '%-10s %-12s %-14s %s\n' 0 "$base_series" "$((base_rss / 1048576))" -
for n in $SERIES; do
    read -r _ head rss <<<"$(measure "$n")"
    printf '%-10s %-12s %-14s %s\n' "$n" "$head" "$((rss / 1048576))" "$(( (rss - base_rss) / (head - base_series) ))"
done
