#!/usr/bin/env bash
# qiflow CI, tier 2 for the audit trail: a real PostgreSQL server, throwaway, on loopback.
#
#   1. initdb a cluster in a temp dir with the machine's /usr/lib/postgresql/*/bin/initdb
#      (as the `postgres` user: initdb and postgres refuse to run as root; `runuser` drops to it);
#   2. start it with pg_ctl on a free 127.0.0.1 port, its unix socket in the temp dir;
#   3. run the #[ignore]d tests of qiflow-core/tests/audit_postgres.rs and of
#      qiflow-core/tests/dependency_postgres.rs (a pool registered as a dependency) with
#      QIFLOW_TEST_POSTGRES_URL and QIFLOW_TEST_POSTGRES_CTL (a helper script the tests call
#      with `stop` / `start` to restart the server mid-stream);
#   4. a second cluster that accepts TLS connections only (ssl=on, `hostssl` in pg_hba.conf),
#      with a server certificate for 127.0.0.1 from a throwaway CA made with openssl, and a
#      second, unrelated CA: the sslmode tests (QIFLOW_TEST_POSTGRES_TLS_URL,
#      QIFLOW_TEST_POSTGRES_CA, QIFLOW_TEST_POSTGRES_WRONG_CA);
#   5. `qiflow audit verify --postgres` on what the tests left, the URL from the environment
#      (QIFLOW__AUDIT__POSTGRES_URL), never the command line, over plain and verify-full TLS;
#   6. stop the servers (pg_ctl stop, then the postmaster pid if it lingers), remove the dir.
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

tls_data="$tmp/tls-data"
tls_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

stop_cluster() {
    local dir=$1
    if [[ -f "$dir/postmaster.pid" ]]; then
        as_pg "$bindir/pg_ctl" -D "$dir" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
        if [[ -f "$dir/postmaster.pid" ]]; then
            pid=$(head -n1 "$dir/postmaster.pid")
            [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}

cleanup() {
    local rc=$?
    stop_cluster "$data"
    stop_cluster "$tls_data"
    if [[ $rc -ne 0 ]]; then
        for log in "$tmp/server.log" "$tmp/tls-server.log"; do
            [[ -f "$log" ]] && { echo "--- $log (last 30 lines) ---"; tail -n 30 "$log"; }
        done
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

step "a CA, a server certificate for 127.0.0.1, and an unrelated CA (openssl)"
pki="$tmp/pki"
mkdir -p "$pki"
make_ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" \
        -keyout "$pki/$1.key" -out "$pki/$1.pem" >/dev/null 2>&1 || die "openssl: cannot make the CA $2"
}
make_ca ca "qiflow tier2 CA"
make_ca wrong-ca "some other CA"
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$pki/server.key" -out "$pki/server.csr" >/dev/null 2>&1 || die "openssl: cannot make the server key"
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$pki/server.ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/server.ext" -out "$pki/server.pem" >/dev/null 2>&1 || die "openssl: cannot sign the server certificate"
chmod 644 "$pki"/*.pem

step "initdb a TLS-only cluster in $tls_data (as $pguser)"
as_pg "$bindir/initdb" -D "$tls_data" -U qiflow -A trust --no-sync >"$tmp/tls-initdb.log" 2>&1 ||
    { cat "$tmp/tls-initdb.log"; die "initdb (TLS cluster) failed"; }
cp "$pki/server.pem" "$pki/server.key" "$tls_data/"
[[ $(id -u) -eq 0 ]] && chown "$pguser" "$tls_data/server.pem" "$tls_data/server.key"
chmod 600 "$tls_data/server.key"
# TCP connections must use TLS; a plain one is refused.
cat >"$tls_data/pg_hba.conf" <<HBA
local   all all              trust
hostssl all all 127.0.0.1/32 trust
hostnossl all all 127.0.0.1/32 reject
HBA
as_pg "$bindir/pg_ctl" -D "$tls_data" -l "$tmp/tls-server.log" -w -t 30 \
    -o "-p $tls_port -k $sock -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key" \
    start >/dev/null || die "the TLS cluster did not start"
echo "TLS postmaster pid $(head -n1 "$tls_data/postmaster.pid") on 127.0.0.1:$tls_port"

export QIFLOW_TEST_POSTGRES_TLS_URL="postgres://qiflow@127.0.0.1:$tls_port/postgres"
export QIFLOW_TEST_POSTGRES_CA="$pki/ca.pem"
export QIFLOW_TEST_POSTGRES_WRONG_CA="$pki/wrong-ca.pem"

step "tier 2 tests: cargo test -p qiflow-core --test audit_postgres --test dependency_postgres -- --ignored"
cargo test -p qiflow-core --test audit_postgres --test dependency_postgres -- --ignored --test-threads=1

step "qiflow audit verify --postgres (URL from QIFLOW__AUDIT__POSTGRES_URL)"
QIFLOW__AUDIT__POSTGRES_URL="$QIFLOW_TEST_POSTGRES_URL" \
    cargo run -q -p qiflow-core --features cli --bin qiflow -- audit verify --postgres
QIFLOW__AUDIT__POSTGRES_URL="$QIFLOW_TEST_POSTGRES_TLS_URL?sslmode=verify-full&sslrootcert=$QIFLOW_TEST_POSTGRES_CA" \
    cargo run -q -p qiflow-core --features cli --bin qiflow -- audit verify --postgres

echo
echo "tier2-audit: OK"
