#!/usr/bin/env bash
# The public API of the four published crates against the lists committed in public-api/, so a
# change to the surface is deliberate: it shows in the diff of public-api/*.txt.
#
#   bash .ci/public-api.sh           # fails, printing the diff, when the API changed
#   bash .ci/public-api.sh --bless   # writes the new lists (commit them with the change)
#
# rustdoc's JSON output is unstable: it is produced with the stable toolchain and
# RUSTC_BOOTSTRAP=1 (as cargo-semver-checks does), into target/public-api, with every feature on.
# .ci/public_api.py turns each crate's JSON into one line per public item.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bless=false
[[ "${1:-}" == "--bless" ]] && bless=true
out=target/public-api
mkdir -p public-api "$out"
status=0
for crate in qiflow-core qiflow-tower qiflow-axum qiflow-actix; do
    name=${crate//-/_}
    RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$out" cargo rustdoc -q -p "$crate" --lib --all-features \
        -- -Z unstable-options --output-format json
    python3 .ci/public_api.py "$out/doc/$name.json" >"$out/$crate.txt"
    if $bless; then
        cp "$out/$crate.txt" "public-api/$crate.txt"
        echo "public-api/$crate.txt: $(wc -l <"public-api/$crate.txt") items"
    elif ! diff -u "public-api/$crate.txt" "$out/$crate.txt"; then
        echo "error: the public API of $crate changed (the diff above). If the change is deliberate," >&2
        echo "run 'bash .ci/public-api.sh --bless' and commit public-api/$crate.txt with it;" >&2
        echo "say what changed in CHANGELOG.md." >&2
        status=1
    else
        echo "public-api/$crate.txt: unchanged ($(wc -l <"public-api/$crate.txt") items)"
    fi
done
exit $status
