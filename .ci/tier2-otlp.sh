#!/usr/bin/env bash
# qiflow CI, tier 2 for OTLP trace export: the Python OTLP receiver, which decodes each export
# with the official generated classes of the OTLP schema (the `opentelemetry-proto` package from
# PyPI), on loopback.
#
#   1. find the interpreter: $QIFLOW_TEST_PYTHON, else `python3` on PATH (on the CI machine,
#      pyenv's CPython 3.11, into which .ci/run pip-installs the pins; Debian's /usr/bin/python3
#      has no pip and is left to aiosmtpd), and check that it has the pinned versions of
#      qiflow-core/tests/support/otlp-requirements.txt;
#   2. run the #[ignore]d tests of the test files in OTLP_TESTS (`--ignored`) with
#      QIFLOW_TEST_PYTHON set to it; each test starts its own receiver
#      (qiflow-core/tests/support/otlp_receiver.py, through tests/support/otlp.rs) on a free
#      127.0.0.1 port and kills it when done.
#
# Needs that interpreter with the pins:
#   python3 -m pip install -r qiflow-core/tests/support/otlp-requirements.txt
# Run it from anywhere: `bash .ci/tier2-otlp.sh`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

die() { echo "tier2-otlp: FAILED: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

# The test files whose #[ignore]d tests need the Python receiver.
OTLP_TESTS=(otlp_receiver otlp_export)
REQUIREMENTS=qiflow-core/tests/support/otlp-requirements.txt

step "checking the interpreter and its packages"
python="${QIFLOW_TEST_PYTHON:-$(command -v python3 || true)}"
[[ -n "$python" ]] ||
    die "no python3 on PATH. Install CPython 3 with pip, then: python3 -m pip install -r $REQUIREMENTS"
# Each pin of the requirements file, installed at that version.
"$python" - "$REQUIREMENTS" <<'PY' || die "install them with: $python -m pip install -r $REQUIREMENTS"
import sys
from importlib.metadata import PackageNotFoundError, version

wrong = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    name, pinned = line.split("==")
    try:
        found = version(name)
    except PackageNotFoundError:
        found = None
    if found != pinned:
        wrong.append(f"{name}: {found or 'not installed'}, pinned {pinned}")
if wrong:
    print(f"tier2-otlp: {sys.executable}: " + "; ".join(wrong), file=sys.stderr)
    sys.exit(1)
PY
"$python" -c 'from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest' ||
    die "$python cannot import opentelemetry-proto's ExportTraceServiceRequest; reinstall: $python -m pip install --force-reinstall -r $REQUIREMENTS"
echo "python: $python ($("$python" --version 2>&1)); $(grep -v '^#' "$REQUIREMENTS" | tr '\n' ' ')"
export QIFLOW_TEST_PYTHON="$python"

for t in "${OTLP_TESTS[@]}"; do
    step "tier 2 tests: cargo test -p qiflow-core --test $t -- --ignored"
    cargo test -p qiflow-core --test "$t" -- --ignored
done

echo
echo "tier2-otlp: OK"
