#!/usr/bin/env bash
# qiflow CI, tier 2 for alerts: email through a real SMTP server and alerts through a real
# Alertmanager, both on loopback.
#
#   1. start Debian's aiosmtpd (`/usr/bin/python3 -m aiosmtpd`, Mailbox handler writing a temp
#      maildir) three times: plain, with STARTTLS required, and with implicit TLS, the last two
#      with a certificate for 127.0.0.1 from a private CA made here with openssl; and Debian's
#      prometheus-alertmanager (minimal config, storage and clustering off in a temp dir), all on
#      free 127.0.0.1 ports;
#   2. run the gated tests of qiflow-core/tests/alert_tier2.rs (`--ignored`) with their addresses;
#      they send through qiflow and read the mail back from the maildir and the alert (then its
#      resolve) from Alertmanager's /api/v2/alerts;
#   3. stop both servers, by pid.
#
# Needs /usr/bin/python3 with aiosmtpd, openssl and /usr/bin/prometheus-alertmanager:
#   apt-get update && apt-get install -y python3-aiosmtpd openssl prometheus-alertmanager
# Run it from anywhere: `bash .ci/tier2-alerts.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

die() { echo "tier2-alerts: FAILED: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

PY=/usr/bin/python3
AM=/usr/bin/prometheus-alertmanager
step "checking tools"
[[ -x $PY ]] || die "$PY not found. Install it with: apt-get update && apt-get install -y python3 python3-aiosmtpd"
$PY -c 'import aiosmtpd' 2>/dev/null \
    || die "Debian's python3 has no aiosmtpd. Install it with: apt-get update && apt-get install -y python3-aiosmtpd"
command -v openssl >/dev/null || die "openssl not found. Install it with: apt-get update && apt-get install -y openssl"
[[ -x $AM ]] || die "$AM not found. Install it with: apt-get update && apt-get install -y prometheus-alertmanager"
echo "aiosmtpd:     $($PY -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
echo "alertmanager: $($AM --version 2>&1 | head -n1)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qiflow-tier2-alerts.XXXXXX")
smtp_pid=""
starttls_pid=""
smtps_pid=""
am_pid=""
ok=0

# shellcheck source=.ci/lib.sh
source .ci/lib.sh

cleanup() {
    local rc=$?
    set +e
    [[ -n $smtp_pid ]] && stop_pid "$smtp_pid"
    [[ -n $starttls_pid ]] && stop_pid "$starttls_pid"
    [[ -n $smtps_pid ]] && stop_pid "$smtps_pid"
    [[ -n $am_pid ]] && stop_pid "$am_pid"
    if [[ $ok != 1 ]]; then
        echo "tier2-alerts: failed (exit $rc); server logs:" >&2
        for f in "$tmp"/aiosmtpd*.log "$tmp"/openssl.log "$tmp"/alertmanager.log; do
            [[ -f $f ]] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
        done
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # host port what
    local i
    for ((i = 0; i < 150; i++)); do
        if $PY -c "import socket,sys; socket.create_connection(('$1', $2), 0.5)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$3 did not listen on $1:$2 within 15s"
}

step "starting aiosmtpd"
smtp_port=$(free_port)
# aiosmtpd creates the maildir (with its cur/new/tmp) when it does not exist yet.
$PY -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox "$tmp/maildir" \
    >"$tmp/aiosmtpd.log" 2>&1 &
smtp_pid=$!
wait_port 127.0.0.1 "$smtp_port" aiosmtpd
echo "aiosmtpd on 127.0.0.1:$smtp_port (pid $smtp_pid), maildir $tmp/maildir"

step "making a private CA and a certificate for 127.0.0.1 (openssl)"
(
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=qiflow tier2 CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
    printf '%s\n' "basicConstraints=CA:FALSE" "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem
) >"$tmp/openssl.log" 2>&1 || die "openssl could not make the test certificates (see $tmp/openssl.log)"
echo "CA $tmp/ca.pem, server certificate $tmp/server.pem"

step "starting aiosmtpd with STARTTLS and with implicit TLS"
starttls_port=$(free_port)
$PY -m aiosmtpd -n -l "127.0.0.1:$starttls_port" --tlscert "$tmp/server.pem" --tlskey "$tmp/server.key" \
    -c aiosmtpd.handlers.Mailbox "$tmp/maildir" >"$tmp/aiosmtpd-starttls.log" 2>&1 &
starttls_pid=$!
wait_port 127.0.0.1 "$starttls_port" "aiosmtpd (STARTTLS)"
smtps_port=$(free_port)
$PY -m aiosmtpd -n -l "127.0.0.1:$smtps_port" --smtpscert "$tmp/server.pem" --smtpskey "$tmp/server.key" \
    -c aiosmtpd.handlers.Mailbox "$tmp/maildir" >"$tmp/aiosmtpd-smtps.log" 2>&1 &
smtps_pid=$!
wait_port 127.0.0.1 "$smtps_port" "aiosmtpd (implicit TLS)"
echo "STARTTLS on 127.0.0.1:$starttls_port (pid $starttls_pid), implicit TLS on 127.0.0.1:$smtps_port (pid $smtps_pid)"

step "starting Alertmanager"
am_port=$(free_port)
cat >"$tmp/alertmanager.yml" <<'YAML'
route:
  receiver: blackhole
receivers:
  - name: blackhole
YAML
$AM --config.file="$tmp/alertmanager.yml" --storage.path="$tmp/am-data" \
    --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= \
    >"$tmp/alertmanager.log" 2>&1 &
am_pid=$!
for ((i = 0; i < 150; i++)); do
    if $PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$am_port/-/ready', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$am_pid" 2>/dev/null || die "Alertmanager exited at start"
    sleep 0.1
done
(( i < 150 )) || die "Alertmanager was not ready within 15s"
echo "Alertmanager on 127.0.0.1:$am_port (pid $am_pid)"

step "running the gated alert tests"
QIFLOW_TIER2_SMTP="127.0.0.1:$smtp_port" \
QIFLOW_TIER2_MAILDIR="$tmp/maildir" \
QIFLOW_TIER2_SMTP_STARTTLS="127.0.0.1:$starttls_port" \
QIFLOW_TIER2_SMTPS="127.0.0.1:$smtps_port" \
QIFLOW_TIER2_SMTP_CA="$tmp/ca.pem" \
QIFLOW_TIER2_ALERTMANAGER="http://127.0.0.1:$am_port" \
    cargo test -p qiflow-core --test alert_tier2 -- --ignored --test-threads=1

ok=1
step "tier2-alerts: passed"
