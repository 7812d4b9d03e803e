#!/usr/bin/env bash
# Smoke-run cargo-fuzz targets: each for a few seconds, on the stable toolchain.
#
#   scripts/fuzz-smoke.sh [-t SECONDS] [TARGET...]
#
# With no TARGET, runs every target listed in fuzz/Cargo.toml. SECONDS defaults to
# $FUZZ_SECONDS or 15. cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP=1
# makes stable accept them. Installs cargo-fuzz if it is missing. Runs all targets
# even if one fails, and exits non-zero if any did (a crash leaves its input under
# fuzz/artifacts/<target>/).
set -euo pipefail

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }

secs="${FUZZ_SECONDS:-15}"
while getopts "t:h" opt; do
    case "$opt" in
        t) secs="$OPTARG" ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
case "$secs" in
    ''|*[!0-9]*) echo "fuzz-smoke: seconds must be a whole number, got '$secs'" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz-smoke: no fuzz targets found" >&2
    exit 1
fi

failed=()
for t in "${targets[@]}"; do
    echo "=== fuzz-smoke: $t for ${secs}s" >&2
    if ! cargo fuzz run "$t" -- -max_total_time="$secs"; then
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} target(s) ran clean for ${secs}s each" >&2
