# Bench-only callback: appends the wall-clock time at which the playbook starts and ends to the
# file named by PHASE_MARKS, so that a bench can split a run into startup, body and teardown.
from __future__ import annotations

import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: phase_marks
type: aggregate
short_description: When the playbook starts and ends (bench only)
description:
  - Appends C(on_start <epoch>) and C(on_stats <epoch>) lines to the file the environment variable
    C(PHASE_MARKS) names.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "phase_marks"
    CALLBACK_NEEDS_ENABLED = True

    def _mark(self, what):
        path = os.environ.get("PHASE_MARKS")
        if path:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("%s %.6f\n" % (what, time.time()))

    def v2_playbook_on_start(self, playbook):
        self._mark("on_start")

    def v2_playbook_on_stats(self, stats):
        self._mark("on_stats")
