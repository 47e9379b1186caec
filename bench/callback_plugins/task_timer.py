# Bench-only callback: prints the wall time of every task at the end of the run.
from __future__ import annotations

import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: task_timer
type: aggregate
short_description: Wall time per task (bench only)
description:
  - Prints each task's wall time, longest first, at the end of the play.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._current = None
        self._times = []

    def _close(self):
        if self._current:
            name, started = self._current
            self._times.append((time.monotonic() - started, name))
            self._current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        self._current = (task.get_name(), time.monotonic())

    def v2_playbook_on_stats(self, stats):
        self._close()
        total = sum(t for t, _n in self._times)
        self._display.display("task times (total %.2f s over %d tasks):" % (total, len(self._times)))
        for seconds, name in self._times:
            self._display.display("  %6.2f s  %s" % (seconds, name))
