#!/usr/bin/env bash
# qiflow CI, tier 2 for the live dashboard (/qiflow/): a real browser against each example.
#
#   1. install the pinned playwright-core (`npm ci` in .ci/browser; no browser download: it drives
#      Debian's Chromium, $CHROMIUM or /usr/bin/chromium);
#   2. for quickstart (axum), actix-app and tower-hyper, built in release mode: start the binary in
#      a temp dir on a loopback port, wait for /health/live and its generated data/admin-token, and
#      run .ci/browser/dashboard.mjs (login form, data, console, kiosk, dark scheme; see the file),
#      which saves a screenshot to ${QIFLOW_ARTIFACTS:-target/ci-artifacts}/dashboard-<name>.png;
#   3. stop each server by pid; on a failure, print the tail of its log.
# With QIFLOW_REFRESH_SCREENSHOT=1, the axum screenshot then replaces docs/images/dashboard.png.
#
# Needs node and npm (Node 20+), curl and Chromium:
#   apt-get update && apt-get install -y chromium curl nodejs npm
# Run it from anywhere: `bash .ci/tier2-browser.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

die() { echo "tier2-browser: FAILED: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }
# shellcheck source=.ci/lib.sh
source .ci/lib.sh

step "checking tools"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[[ -x $CHROMIUM ]] || die "$CHROMIUM not found: install Debian's chromium (apt-get install -y chromium)"
command -v node >/dev/null || die "node not found. Install it with: apt-get update && apt-get install -y nodejs npm"
command -v npm >/dev/null || die "npm not found. Install it with: apt-get update && apt-get install -y npm"
command -v curl >/dev/null || die "curl not found. Install it with: apt-get update && apt-get install -y curl"
echo "chromium: $("$CHROMIUM" --version 2>/dev/null | head -n1)"
echo "node:     $(node --version)"

# The example binaries, built once into the shared target dir.
target_dir=${CARGO_TARGET_DIR:-target}
examples=(quickstart actix-app tower-hyper)
missing=0
for bin in "${examples[@]}"; do
    [[ -x $target_dir/release/$bin ]] || missing=1
done
if [[ $missing == 1 ]]; then
    step "building the examples and the qiflow CLI (release)"
    release_examples
fi
release_dir=$(cd "$target_dir/release" && pwd)

artifacts=${QIFLOW_ARTIFACTS:-target/ci-artifacts}
mkdir -p "$artifacts"
artifacts=$(cd "$artifacts" && pwd)

step "installing playwright-core (npm ci in .ci/browser)"
npm ci --no-audit --no-fund --prefix .ci/browser

server_pid=""
server_tmp=""
tmp_dirs=()

stop_server() {
    local pid=$server_pid
    server_pid=""
    stop_pid "$pid"
}

cleanup() {
    local rc=$?
    set +e
    stop_server
    if [[ $rc != 0 && -n $server_tmp && -f $server_tmp/server.log ]]; then
        echo "tier2-browser: failed (exit $rc); the end of $server_tmp/server.log:" >&2
        tail -n 40 "$server_tmp/server.log" >&2
    fi
    for d in "${tmp_dirs[@]}"; do rm -rf "$d"; done
    exit "$rc"
}
trap cleanup EXIT

# A loopback port nobody listens on: the preferred one, else the next free one above it.
free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    echo "$port"
}

# run_one BINARY NAME PORT: one example under the browser test.
run_one() {
    local bin=$1 name=$2 port i
    port=$(free_port "$3")
    server_tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-tier2-browser-$name.XXXXXX")
    tmp_dirs+=("$server_tmp")
    step "$name: starting $bin on 127.0.0.1:$port (in $server_tmp)"
    # `exec env`: the background pid is the binary's own, which is what stop_server kills.
    (
        cd "$server_tmp"
        exec env -u RUST_LOG \
            QIFLOW_ADDR="127.0.0.1:$port" \
            QIFLOW__LOGGING__STDOUT=false \
            QIFLOW__LOGGING__DIR="$server_tmp/logs" \
            QIFLOW__AUDIT__DIR="$server_tmp/audit" \
            QIFLOW__SERVICE__NAME="$bin" \
            QIFLOW__SERVICE__ENVIRONMENT=ci \
            QIFLOW__SERVICE__VERSION=0.1.0 \
            "$release_dir/$bin"
    ) >"$server_tmp/server.log" 2>&1 &
    server_pid=$!

    for ((i = 0; i < 300; i++)); do
        if curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/health/live" 2>/dev/null &&
            [[ -s $server_tmp/data/admin-token ]]; then
            break
        fi
        kill -0 "$server_pid" 2>/dev/null || die "$name: $bin exited before answering /health/live"
        sleep 0.1
    done
    ((i < 300)) || die "$name: no answer from /health/live with data/admin-token written within 30s"
    echo "$name: up (pid $server_pid)"

    step "$name: browser test"
    node .ci/browser/dashboard.mjs --base "http://127.0.0.1:$port" \
        --token-file "$server_tmp/data/admin-token" --name "$name" \
        --screenshot "$artifacts/dashboard-$name.png" ||
        die "$name: the dashboard's browser test failed"

    stop_server
    echo "$name: stopped; screenshot $artifacts/dashboard-$name.png"
}

run_one quickstart axum 38101
run_one actix-app actix 38102
run_one tower-hyper tower 38103

if [[ ${QIFLOW_REFRESH_SCREENSHOT:-} == 1 ]]; then
    step "refreshing docs/images/dashboard.png"
    mkdir -p docs/images
    cp "$artifacts/dashboard-axum.png" docs/images/dashboard.png
    echo "docs/images/dashboard.png <- $artifacts/dashboard-axum.png"
fi

echo
echo "tier2-browser: ok (axum, actix, tower)"
