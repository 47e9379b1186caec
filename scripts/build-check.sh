#!/usr/bin/env bash
# The collection builds into an installable artifact, installs into a clean collections
# path, and ansible-doc finds its modules there.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/ansible-galaxy collection build --output-path "$work" >/dev/null
tarball=$(ls "$work"/lastgood-rollback-*.tar.gz)
repo=$PWD
# From a neutral directory: the repository's ansible.cfg would point at this checkout.
(cd "$work" && ANSIBLE_COLLECTIONS_PATH="$work/collections" \
  "$repo/.venv/bin/ansible-galaxy" collection install --force -p "$work/collections" "$tarball" >/dev/null)
if tar -tzf "$tarball" | grep -Eq '^(\.venv|\.collections|\.git|demo|bench|scripts|tests/output)/'; then
  echo "build-check: the artifact contains development files" >&2
  exit 1
fi
(cd "$work" && ANSIBLE_COLLECTIONS_PATH="$work/collections" "$repo/.venv/bin/ansible-doc" -l lastgood.rollback) \
  | grep -q 'lastgood.rollback.compose_image_restore'
echo "build-check: $(basename "$tarball") $(stat -c %s "$tarball") bytes, installs, ansible-doc lists its modules"
