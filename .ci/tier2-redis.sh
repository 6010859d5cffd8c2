#!/usr/bin/env bash
# qiflow CI, tier 2 for Redis as a dependency: a throwaway redis-server (Debian's) on loopback,
# no persistence, in a temp dir; the #[ignore]d tests of qiflow-core/tests/dependency_redis.rs
# run against it with QIFLOW_TEST_REDIS_URL, and QIFLOW_TEST_REDIS_CTL (a script taking `stop`
# and `start`) to take the server away and back mid-test.
#
# Needs Debian's redis-server (`.ci/run` installs it). Run it from anywhere: `bash .ci/tier2-redis.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
# shellcheck source=.ci/lib.sh
source .ci/lib.sh
die() { echo "tier2-redis: FAILED: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

command -v redis-server >/dev/null || die "redis-server not found: apt-get install -y redis-server"
echo "redis-server: $(redis-server --version)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-tier2-redis.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    local rc=$?
    set +e
    [[ -f $tmp/pid ]] && stop_pid "$(cat "$tmp/pid")"
    if [[ $rc != 0 && -f $tmp/redis.log ]]; then
        echo "--- redis.log (last 20 lines)" >&2
        tail -n 20 "$tmp/redis.log" >&2
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

# The helper the test calls: `start` runs the server in the background (its pid in $tmp/pid) and
# waits until it answers; `stop` ends it by that pid.
ctl="$tmp/ctl.sh"
cat >"$ctl" <<CTL
#!/usr/bin/env bash
set -e
case "\$1" in
  start)
    redis-server --bind 127.0.0.1 --port $port --save '' --appendonly no --dir $tmp \
        --daemonize no >>$tmp/redis.log 2>&1 &
    echo \$! >$tmp/pid
    for i in \$(seq 1 100); do
        python3 -c 'import socket; socket.create_connection(("127.0.0.1", $port), 0.2)' 2>/dev/null && exit 0
        sleep 0.05
    done
    echo "redis-server did not answer on 127.0.0.1:$port" >&2; exit 1 ;;
  stop)
    pid=\$(cat $tmp/pid); kill -TERM "\$pid"
    for i in \$(seq 1 100); do kill -0 "\$pid" 2>/dev/null || exit 0; sleep 0.05; done
    kill -KILL "\$pid" ;;
  *) echo "usage: ctl.sh start|stop" >&2; exit 2 ;;
esac
CTL
chmod 755 "$ctl"

step "starting redis-server on 127.0.0.1:$port"
"$ctl" start
export QIFLOW_TEST_REDIS_URL="redis://127.0.0.1:$port/"
export QIFLOW_TEST_REDIS_CTL="$ctl"

step "tier 2 tests: cargo test -p qiflow-core --test dependency_redis -- --ignored"
cargo test -p qiflow-core --test dependency_redis -- --ignored --test-threads=1

echo
echo "tier2-redis: OK"
