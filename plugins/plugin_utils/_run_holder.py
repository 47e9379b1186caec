# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side: name the run a task belongs to, for the project's lock.

A module runs on the managed host, in a process that ends with the task. What lives as long as
the run is the ansible-playbook process on the controller (ansible-runner's child under AWX),
the parent of the worker that runs the action plugin: its host name, pid and start time identify
the run. rollback_run records it in the lock; the tier modules compare it with the lock, so a
tier included by the run that holds the lock goes on and a tier run on its own is refused.
"""

from __future__ import annotations

import getpass
import os
import socket

from ansible.plugins.action import ActionBase

from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import process_start_time


def controller_holder():
    pid = os.getppid()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start_time(pid), "user": user}


class HolderAction(ActionBase):
    """Runs MODULE with its `holder` option set to this run, unless the task gives one."""

    MODULE = None

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # no longer has any effect
        args = dict(self._task.args)
        if not args.get("holder"):
            args["holder"] = controller_holder()
        result.update(self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars))
        return result
