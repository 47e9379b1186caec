#!/usr/bin/env bash
# ansible-lint quality gate (profile: production, offline; configuration in .ansible-lint).
#
#   scripts/lint.sh                 # lint the whole repository
#   scripts/lint.sh roles/foo ...   # lint only the given paths (extra ansible-lint options allowed)
#
# Uses the project's .venv (created/updated by scripts/setup-venv.sh). Exits non-zero when
# ansible-lint reports a violation.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$REPO_ROOT/scripts/setup-venv.sh"

cd "$REPO_ROOT"
export VIRTUAL_ENV="$REPO_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export ANSIBLE_CONFIG="$REPO_ROOT/ansible.cfg"
export NO_COLOR="${NO_COLOR:-1}"

status=0
ansible-lint --offline -c "$REPO_ROOT/.ansible-lint" "$@" || status=$?
if [ "$status" -eq 0 ]; then
    echo "lint.sh: ansible-lint passed (profile production)"
else
    echo "lint.sh: ansible-lint FAILED (exit $status)" >&2
fi
exit "$status"
