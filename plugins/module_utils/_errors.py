# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error shape every step of the collection raises."""

from __future__ import annotations


class StepError(Exception):
    """A refused or failed step: `msg` is one line for the module's `msg`; `result` carries the
    details for the module result (cmd, rc, stdout, stderr, what was already done)."""

    def __init__(self, msg, **result):
        super().__init__(msg)
        self.msg = msg
        self.result = result


def fail_step(module, exc, **extra):
    """Fail the module from a StepError: its one-line msg, its details, and `extra`."""
    result = dict(exc.result)
    result.update(extra)
    module.fail_json(msg=exc.msg, **result)
