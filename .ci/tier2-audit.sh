#!/usr/bin/env bash
# qiflow CI, tier 2 for the audit trail: a real PostgreSQL server, throwaway, on loopback.
#
#   1. initdb a cluster in a temp dir with the machine's /usr/lib/postgresql/*/bin/initdb
#      (as the `postgres` user: initdb and postgres refuse to run as root; `runuser` drops to it);
#   2. start it with pg_ctl on a free 127.0.0.1 port, its unix socket in the temp dir;
#   3. run the #[ignore]d tests of qiflow-core/tests/audit_postgres.rs (`--ignored`) with
#      QIFLOW_TEST_POSTGRES_URL and QIFLOW_TEST_POSTGRES_CTL (a helper script the tests call
#      with `stop` / `start` to restart the server mid-stream);
#   4. `qiflow audit verify --postgres` on what the tests left;
#   5. stop the server (pg_ctl stop, then its postmaster pid if it lingers) and remove the dir.
#
# Needs Debian's PostgreSQL server (`apt-get install -y postgresql`: the machine image has it).
# Run it from anywhere: `bash .ci/tier2-audit.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
die() { echo "tier2-audit: FAILED: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[[ -n "$bindir" && -x "$bindir/initdb" && -x "$bindir/pg_ctl" ]] ||
    die "no PostgreSQL server found under /usr/lib/postgresql/*/bin; install it with: apt-get update && apt-get install -y postgresql"
echo "postgres: $bindir ($("$bindir/postgres" --version))"

# initdb refuses root: run the server as an unprivileged user.
pguser=postgres
id "$pguser" >/dev/null 2>&1 || pguser=nobody
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u "$pguser" -- "$@"; else "$@"; fi
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-tier2-audit.XXXXXX")
chmod 755 "$tmp"
data="$tmp/data"
sock="$tmp/sock"
mkdir -p "$sock"
[[ $(id -u) -eq 0 ]] && chown -R "$pguser" "$tmp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cleanup() {
    local rc=$?
    if [[ -f "$data/postmaster.pid" ]]; then
        as_pg "$bindir/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
        if [[ -f "$data/postmaster.pid" ]]; then
            pid=$(head -n1 "$data/postmaster.pid")
            [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [[ $rc -ne 0 && -f "$tmp/server.log" ]]; then
        echo "--- server.log (last 30 lines) ---"; tail -n 30 "$tmp/server.log"
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT

step "initdb in $data (as $pguser)"
as_pg "$bindir/initdb" -D "$data" -U qiflow -A trust --no-sync >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log"; die "initdb failed"; }

# The helper the tests call to stop and start the server mid-stream.
ctl="$tmp/ctl.sh"
cat >"$ctl" <<CTL
#!/usr/bin/env bash
set -e
as_pg() { if [[ \$(id -u) -eq 0 ]]; then runuser -u "$pguser" -- "\$@"; else "\$@"; fi; }
case "\$1" in
  stop)  as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop ;;
  start) as_pg "$bindir/pg_ctl" -D "$data" -l "$tmp/server.log" -w -t 30 \
           -o "-p $port -k $sock -c listen_addresses=127.0.0.1 -c fsync=off" start ;;
  *) echo "usage: ctl.sh stop|start" >&2; exit 2 ;;
esac
CTL
chmod 755 "$ctl"

step "starting PostgreSQL on 127.0.0.1:$port"
"$ctl" start >/dev/null
echo "postmaster pid $(head -n1 "$data/postmaster.pid")"

export QIFLOW_TEST_POSTGRES_URL="postgres://qiflow@127.0.0.1:$port/postgres"
export QIFLOW_TEST_POSTGRES_CTL="$ctl"

step "tier 2 tests: cargo test -p qiflow-core --test audit_postgres -- --ignored"
cargo test -p qiflow-core --test audit_postgres -- --ignored --test-threads=1

step "qiflow audit verify --postgres"
cargo run -q -p qiflow-core --features cli --bin qiflow -- audit verify --postgres "$QIFLOW_TEST_POSTGRES_URL"

echo
echo "tier2-audit: OK"
