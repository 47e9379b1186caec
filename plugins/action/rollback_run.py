# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of lastgood.rollback.rollback_run: say on the controller who holds the lock.

The module runs on the managed host, where its own process ends with the task. What lives as
long as the run is the ansible-playbook (or ansible-runner's) process on the controller, the
parent of this worker: its host name, pid and start time identify the run in the lock.
"""

from __future__ import annotations

import getpass
import os
import socket

from ansible.plugins.action import ActionBase

from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import process_start_time

MODULE = "lastgood.rollback.rollback_run"


class ActionModule(ActionBase):

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # no longer has any effect
        args = dict(self._task.args)
        if not args.get("holder"):
            pid = os.getppid()
            try:
                user = getpass.getuser()
            except (KeyError, OSError):
                user = str(os.getuid())
            args["holder"] = {"host": socket.gethostname(), "pid": pid, "pid_start": process_start_time(pid), "user": user}
        result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        return result
