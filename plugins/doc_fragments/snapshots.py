# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # Where the snapshots of every project live (see module_utils/_manifest.py for the layout).
    DOCUMENTATION = r"""
options:
  backup_root:
    description:
      - Directory holding the snapshots of all projects, one directory per project
        (C(<backup_root>/<project>/<snapshot_id>/manifest.json), C(<backup_root>/<project>/last-known-good)).
    type: path
    default: /var/backups/lastgood
"""
