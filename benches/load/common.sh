# Shell functions shared by run.sh, profile.sh and ab.sh (sourced, not run).

# Stops a process this script started: SIGTERM, up to 15 s, then SIGKILL; then reaps it.
stop_pid() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null || true
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$(basename "$0"): PID $pid did not stop within 15 s of SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Waits until 127.0.0.1:$1 accepts connections (a bare connect: no request, so no log line).
wait_port() {
    local port="$1" pid="$2"
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# CPU ticks (user + system, every thread) a process has used so far, from /proc/PID/stat: the
# fields after the parenthesised command name, so a name with spaces cannot shift them.
proc_cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# wrk's latency with its unit (us, ms, s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}
