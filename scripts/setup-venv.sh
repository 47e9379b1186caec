#!/usr/bin/env bash
# Idempotent development/CI environment for the lastgood.rollback collection.
#
#   1. .venv (Python 3.11) is created if missing;
#   2. `pip install -r requirements-dev.txt` runs only when requirements-dev.txt changed
#      since the last successful install (sha256 stamp in .venv/.requirements-dev.sha256);
#   3. this checkout is linked as .collections/ansible_collections/lastgood/rollback
#      (relative symlink; ansible.cfg sets collections_path = ./.collections);
#   4. the offline stand-in for ansible-test's pip bootstrap script is placed at
#      ~/.ansible/test/cache/get_pip_<version>.py for every pip version this
#      ansible-test release may ask for (ansible-test --venv would otherwise try to
#      download it from a host that is not reachable here).
#
# Usage: scripts/setup-venv.sh            (PYTHON=/path/to/python3.11 to choose the interpreter)
# Re-running it when nothing changed takes well under a second.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
REQUIREMENTS="$REPO_ROOT/requirements-dev.txt"
STAMP="$VENV/.requirements-dev.sha256"
WANT_PY="3.11"

log() { printf 'setup-venv: %s\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$WANT_PY" ]; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# --- 1. virtual environment -------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "$VENV/bin/python is broken (interpreter moved?); recreating the venv"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! PY="$(find_python)"; then
        log "no Python $WANT_PY found (tried \$PYTHON, python3.11, python3)"
        exit 1
    fi
    log "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
    rm -f "$STAMP"
fi
VENV_PY_VERSION="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$VENV_PY_VERSION" != "$WANT_PY" ]; then
    log "warning: $VENV uses Python $VENV_PY_VERSION, expected $WANT_PY (remove .venv to recreate it)"
fi

# --- 2. requirements (only when requirements-dev.txt changed) ---------------------------
want_sum="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
have_sum="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want_sum" != "$have_sum" ]; then
    log "installing requirements-dev.txt into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$REQUIREMENTS"
    printf '%s\n' "$want_sum" >"$STAMP"
else
    log "requirements-dev.txt unchanged since last install (stamp $STAMP)"
fi

# --- 3. collection link -----------------------------------------------------------------
LINK_DIR="$REPO_ROOT/.collections/ansible_collections/lastgood"
LINK="$LINK_DIR/rollback"
LINK_TARGET="../../.."   # .collections/ansible_collections/lastgood/rollback -> repo root
mkdir -p "$LINK_DIR"
if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$LINK_TARGET" ]; then
    :
else
    if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
        log "$LINK exists and is not a symlink; refusing to replace it"
        exit 1
    fi
    ln -sfn "$LINK_TARGET" "$LINK"
    log "linked $LINK -> $LINK_TARGET"
fi

# --- 4. offline pip bootstrap for ansible-test --venv -----------------------------------
STAND_IN="$REPO_ROOT/scripts/ansible-test-offline/get_pip.py"
MARKER="lastgood-rollback offline get-pip stand-in"
CACHE_DIR="$HOME/.ansible/test/cache"
# Ask the installed ansible-test which pip version(s) it bootstraps into its venvs.
if ! PIP_VERSIONS="$(cd / && "$VENV/bin/python" - <<'EOF'
import types
from ansible_test._internal.constants import SUPPORTED_PYTHON_VERSIONS
from ansible_test._internal.python_requirements import get_venv_packages
versions = set()
for python_version in SUPPORTED_PYTHON_VERSIONS:
    pip_version = get_venv_packages(types.SimpleNamespace(version=python_version)).get('pip')
    if pip_version:
        versions.add(pip_version)
print(' '.join(sorted(versions)))
EOF
)" || [ -z "$PIP_VERSIONS" ]; then
    # Fallback for an ansible-test whose internals moved: read the default from the source.
    PIP_VERSIONS="$(grep -ho "pip='[0-9.]*'" "$VENV"/lib/python*/site-packages/ansible_test/_internal/python_requirements.py \
        | sed "s/pip='\(.*\)'/\1/" | sort -u | tr '\n' ' ')"
fi
if [ -z "${PIP_VERSIONS// /}" ]; then
    log "could not find the pip version ansible-test bootstraps; ansible-test --venv may try to download get-pip"
    exit 1
fi
mkdir -p "$CACHE_DIR"
for version in $PIP_VERSIONS; do
    dest="$CACHE_DIR/get_pip_${version//./_}.py"
    if [ -e "$dest" ] && ! grep -q "$MARKER" "$dest"; then
        log "keeping $dest (a genuine get-pip script, not our stand-in)"
    elif ! cmp -s "$STAND_IN" "$dest"; then
        cp "$STAND_IN" "$dest.tmp.$$"
        mv -f "$dest.tmp.$$" "$dest"
        log "installed offline pip bootstrap $dest"
    fi
done

log "ready: source $VENV/bin/activate  (ansible-core $("$VENV/bin/python" -c 'import ansible; print(ansible.__version__)' 2>/dev/null || echo '?'))"
