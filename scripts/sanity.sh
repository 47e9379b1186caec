#!/usr/bin/env bash
# ansible-test quality gate for the lastgood.rollback collection (offline-capable).
#
#   scripts/sanity.sh                    # all sanity tests, then unit tests if tests/unit has any
#   scripts/sanity.sh --no-units         # sanity only
#   scripts/sanity.sh --units-only       # unit tests only
#   scripts/sanity.sh --test pep8 ...    # extra arguments go to `ansible-test sanity`
#
# ansible-test needs the collection at .../ansible_collections/<namespace>/<name>/: this
# script copies the checkout's files into a temporary directory of that shape (see below
# why a symlink is not enough) and runs ansible-test there. Results land in the checkout's
# tests/output/ (git-ignored).
#
# --venv: ansible-test builds its own virtual environments and caches them itself
# (~/.ansible/test/venv/sanity.<test>/3.11/<hash> for sanity tests,
# tests/output/.tmp/delegation/ for the controller); the pip bootstrap it would download
# is replaced by the offline stand-in that scripts/setup-venv.sh installs.
#
# No ignore entries are allowed: tests/sanity/ignore-*.txt must not exist or be empty.
# Exits non-zero if any test failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_VERSION="3.11"

run_sanity=1
run_units=auto
sanity_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-units) run_units=0 ;;
        --units) run_units=1 ;;
        --units-only) run_sanity=0; run_units=1 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) sanity_args+=("$1") ;;
    esac
    shift
done

"$REPO_ROOT/scripts/setup-venv.sh"
export PATH="$REPO_ROOT/.venv/bin:$PATH"
export VIRTUAL_ENV="$REPO_ROOT/.venv"

galaxy_field() { sed -n "s/^$1:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p" "$REPO_ROOT/galaxy.yml" | head -n1; }
NAMESPACE="$(galaxy_field namespace)"
NAME="$(galaxy_field name)"
: "${NAMESPACE:=lastgood}" "${NAME:=rollback}"

# --- no ignore entries ------------------------------------------------------------------
ignore_problems=0
shopt -s nullglob
for ignore_file in "$REPO_ROOT"/tests/sanity/ignore-*.txt; do
    if grep -qvE '^[[:space:]]*$' "$ignore_file"; then
        echo "sanity.sh: ${ignore_file#"$REPO_ROOT"/} has entries; ignore entries are not allowed, fix the code instead:" >&2
        grep -nvE '^[[:space:]]*$' "$ignore_file" | sed 's/^/    /' >&2
        ignore_problems=1
    fi
done
shopt -u nullglob

# --- temporary ansible_collections/<namespace>/<name>/ holding a copy of the checkout ----------
# ansible-test resolves the working directory physically (os.getcwd()), also when it
# re-executes itself inside its --venv controller environment, so a symlink to the checkout
# is not enough: the files the collection consists of (git-tracked plus untracked, not
# git-ignored; a few hundred KiB) are copied into a temporary directory of the required
# shape. Its tests/output is a symlink to the checkout's tests/output, so results (and
# ansible-test's controller venv in tests/output/.tmp/delegation) persist between runs.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/${NAMESPACE}-${NAME}-ansible-test.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
CONTENT_ROOT="$WORK/ansible_collections/$NAMESPACE/$NAME"
mkdir -p "$CONTENT_ROOT"
if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # tracked + untracked-but-not-ignored files that exist in the working tree
    (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' path; do
            case "$path" in tests/output/*) continue ;; esac
            if [ -e "$path" ] || [ -L "$path" ]; then printf '%s\0' "$path"; fi
        done | sort -zu | tar --null --no-recursion -T - -cf -) | tar -C "$CONTENT_ROOT" -xf -
else
    (cd "$REPO_ROOT" && tar --exclude=./.git --exclude=./.venv --exclude=./.collections --exclude=./.cache \
        --exclude=./tests/output -cf - .) | tar -C "$CONTENT_ROOT" -xf -
fi
mkdir -p "$REPO_ROOT/tests/output" "$CONTENT_ROOT/tests"
ln -s "$REPO_ROOT/tests/output" "$CONTENT_ROOT/tests/output"
echo "sanity.sh: testing a copy of $REPO_ROOT ($(find "$CONTENT_ROOT" -type f | wc -l) files) at $CONTENT_ROOT"
cd "$CONTENT_ROOT"

# The shellcheck sanity test is silently reduced to a warning when the program is missing:
# install Debian's shellcheck when we can (root + apt-get). SANITY_NO_APT=1 disables this.
if ! command -v shellcheck >/dev/null 2>&1 && [ "${SANITY_NO_APT:-0}" != 1 ] \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "sanity.sh: shellcheck not found; installing Debian's shellcheck package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q shellcheck >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q shellcheck >/dev/null 2>&1; } \
        || echo "sanity.sh: WARNING: could not install shellcheck; the shellcheck sanity test will be skipped" >&2
fi

# ansible-test prefers en_US.UTF-8; use it when the machine has it (otherwise it warns and uses C.UTF-8).
if locale -a 2>/dev/null | grep -qiE '^en_US\.utf-?8$'; then
    export LC_ALL=en_US.UTF-8
fi

summary=()
overall=0

run_logged() {   # run_logged <label> <command...>: run, tee output to $WORK/<label>.log, return its status
    local label="$1"; shift
    echo "sanity.sh: running: $*"
    local start=$SECONDS status=0
    "$@" 2>&1 | tee "$WORK/$label.log" || status=${PIPESTATUS[0]}
    echo "sanity.sh: $label finished with exit code $status in $((SECONDS - start)) s"
    return "$status"
}

if [ "$run_sanity" = 1 ]; then
    sanity_status=0
    run_logged sanity ansible-test sanity --venv --python "$PYTHON_VERSION" --color no "${sanity_args[@]}" || sanity_status=$?
    ran="$(sed -n 's/^Running sanity test "\([^"]*\)".*/\1/p' "$WORK/sanity.log" | sort -u | tr '\n' ' ')"
    failed="$(sed -n '/^FATAL: The [0-9]* sanity test.* failed/,$p' "$WORK/sanity.log" | sed -n '2,$p' \
        | grep -E '^[a-z0-9-]+$' | sort -u | tr '\n' ' ' || true)"
    skipped="$(grep -E '^WARNING: (Skipping|Required program|.*skipped)' "$WORK/sanity.log" | sed 's/^WARNING: /    /' | sort -u || true)"
    errors="$(grep -E '^ERROR: ' "$WORK/sanity.log" | sed 's/^ERROR: /    /' || true)"
    summary+=("sanity tests run ($(wc -w <<<"$ran")): $ran")
    [ -z "$skipped" ] || summary+=("sanity warnings (a test may have been skipped):" "$skipped")
    if [ "$sanity_status" -ne 0 ]; then
        summary+=("SANITY FAILED (exit $sanity_status); failing tests: ${failed:-see log above}")
        [ -z "$errors" ] || summary+=("$errors")
        overall=1
    else
        summary+=("sanity: all passed")
    fi
fi

if [ "$run_units" = auto ]; then
    if find "$REPO_ROOT/tests/unit" -name 'test_*.py' -print -quit 2>/dev/null | grep -q .; then
        run_units=1
    else
        run_units=0
        summary+=("units: skipped (no tests/unit/**/test_*.py)")
    fi
fi
if [ "$run_units" = 1 ]; then
    units_status=0
    run_logged units ansible-test units --venv --python "$PYTHON_VERSION" --color no || units_status=$?
    if [ "$units_status" -ne 0 ]; then
        summary+=("UNITS FAILED (exit $units_status)")
        overall=1
    else
        summary+=("units: passed ($(grep -Eo '[0-9]+ passed[^=]*' "$WORK/units.log" | tail -n1))")
    fi
fi

if [ "$ignore_problems" -ne 0 ]; then
    summary+=("FAILED: tests/sanity/ignore-*.txt contains entries (not allowed)")
    overall=1
fi

echo
echo "==== sanity.sh summary ($NAMESPACE.$NAME, Python $PYTHON_VERSION) ===="
printf '%s\n' "${summary[@]}"
exit "$overall"
