#!/usr/bin/env bash
# Every quality gate, in order from fastest to slowest; all gates run even when one fails,
# and the script exits non-zero if any failed. The last line sums the gates up.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY=.venv/bin/python
passed=0
failed=0
failed_names=()

gate() {
  local name=$1
  shift
  printf '\n=== %s: %s\n' "$name" "$*"
  local started=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    printf '=== %s passed (%d s)\n' "$name" $((SECONDS - started))
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    printf '=== %s FAILED (%d s)\n' "$name" $((SECONDS - started))
  fi
}

gate unit "$PY" -m pytest tests/unit -q -p no:cacheprovider
gate lint scripts/lint.sh
gate build scripts/build-check.sh
gate sanity scripts/sanity.sh --no-units
gate integration "$PY" -m pytest tests/integration -q -p no:cacheprovider
gate molecule scripts/molecule.sh

echo
if [ "$failed" -gt 0 ]; then
  echo "failed gates: ${failed_names[*]}"
fi
echo "gates: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
