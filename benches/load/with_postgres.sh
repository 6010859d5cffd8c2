#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL on loopback (initdb/pg_ctl from
# /usr/lib/postgresql/*/bin, the server's defaults: fsync on), its URL in
# QIFLOW_BENCH_POSTGRES_URL; stops and removes the cluster after.
#
#   bash benches/load/with_postgres.sh cargo bench -p qiflow-benches --bench dependency
#   bash benches/load/with_postgres.sh cargo bench -p qiflow-benches --bench audit -- audit_postgres
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=.ci/lib.sh
source .ci/lib.sh
(($# > 0)) || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-bench-pg.XXXXXX")
cleanup() {
    pg_stop "$tmp"
    rm -rf "$tmp"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg_init "$tmp"
pg_start "$tmp" "$port"
export QIFLOW_BENCH_POSTGRES_URL="postgres://qiflow@127.0.0.1:$port/postgres"
echo "PostgreSQL on 127.0.0.1:$port ($("$(pg_bindir)/postgres" --version))" >&2
"$@"
