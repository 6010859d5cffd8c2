# Shell functions shared by the tier-2 scripts (sourced, not run).

# Stops a process the script started: SIGTERM, up to 10 s, then SIGKILL; then reaps it.
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$(basename "$0" .sh): pid $pid still running 10s after SIGTERM: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# PostgreSQL from the machine image (/usr/lib/postgresql/*/bin), for scripts that need a
# throwaway cluster on loopback. initdb and postgres refuse root: as root, they run as the
# `postgres` user (or `nobody`), so the cluster's directory must be theirs (`pg_init` does it).
pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]] || {
        echo "no PostgreSQL server under /usr/lib/postgresql/*/bin: apt-get install -y postgresql" >&2
        return 1
    }
    echo "$dir"
}
pg_user() { if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi; }
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u "$(pg_user)" -- "$@"; else "$@"; fi
}
# pg_init DIR: a new cluster in DIR/data (superuser `qiflow`, trust auth), sockets in DIR/sock.
# DIR's parents must be searchable by that user (a `mktemp -d` dir is not: chmod 755 it).
pg_init() {
    local dir=$1 bindir
    bindir=$(pg_bindir) || return 1
    mkdir -p "$dir/sock"
    chmod 755 "$dir"
    [[ $(id -u) -eq 0 ]] && chown -R "$(pg_user)" "$dir"
    as_pg "$bindir/initdb" -D "$dir/data" -U qiflow -A trust --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
}
# pg_start DIR PORT [-c name=value ...]: starts DIR's cluster on 127.0.0.1:PORT, logging to
# DIR/server.log; waits until it accepts connections.
pg_start() {
    local dir=$1 port=$2 bindir
    shift 2
    bindir=$(pg_bindir) || return 1
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 $*" start >/dev/null
}
# pg_stop DIR [MODE]: stops DIR's cluster (fast by default), killing the postmaster if needed.
pg_stop() {
    local dir=$1 mode=${2:-fast} bindir pid
    [[ -f $dir/data/postmaster.pid ]] || return 0
    bindir=$(pg_bindir) || return 0
    as_pg "$bindir/pg_ctl" -D "$dir/data" -m "$mode" -w -t 20 stop >/dev/null 2>&1 || true
    if [[ -f $dir/data/postmaster.pid ]]; then
        pid=$(head -n1 "$dir/data/postmaster.pid")
        [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    fi
}

# release_examples: the release binaries the tier-2 scripts run (quickstart, actix-app,
# tower-hyper and the qiflow CLI), built by one command with one feature set, so the scripts
# after the first find them up to date instead of each building its own feature set again.
release_examples() {
    cargo build --release -p quickstart -p actix-app -p tower-hyper -p qiflow-core \
        --features qiflow-core/cli --bin quickstart --bin actix-app --bin tower-hyper --bin qiflow
}
