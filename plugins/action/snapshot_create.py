# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of lastgood.rollback.snapshot_create: say on the controller which run this task
belongs to, so the module refuses while another run holds the project's lock and never records
a stack in the middle of a change (see plugin_utils/_run_holder.py)."""

from __future__ import annotations

from ansible_collections.lastgood.rollback.plugins.plugin_utils._run_holder import HolderAction


class ActionModule(HolderAction):
    MODULE = "lastgood.rollback.snapshot_create"
