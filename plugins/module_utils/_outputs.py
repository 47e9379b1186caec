# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the backup modules share about the file they write and what they return."""

from __future__ import annotations

import os


def checked_dest(module, dest, force, what):
    """The absolute path of a backup file to write; fails on a directory, or an existing file without force."""
    dest = os.path.abspath(dest)
    if os.path.isdir(dest):
        module.fail_json(msg="dest %s is a directory; give the path of the %s" % (dest, what))
    if os.path.lexists(dest) and not force:
        module.fail_json(msg="dest %s exists; use force: true to replace it" % dest)
    return dest


def exit_with_warnings(module, result, **extra):
    """Show the `warnings` a backup function returned as Ansible warnings, then exit with the result."""
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    module.exit_json(**dict(extra, **result))
