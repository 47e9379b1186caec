# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the emergency stop judges a data container's shutdown."""

from __future__ import annotations

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _emergency as e

SHUT_DOWN = ["LOG:  database system is shut down"]


@pytest.mark.parametrize("state, exit_code, evidence, clean", [
    ("exited", 0, SHUT_DOWN, True),
    ("exited", 0, [], None),
    # Killed after an earlier clean stop: the old line is still in the log.
    ("exited", 137, SHUT_DOWN, False),
    ("exited", 1, [], False),
    ("running", 0, SHUT_DOWN, False),
    ("paused", 0, SHUT_DOWN, False),
    ("restarting", 0, SHUT_DOWN, False),
    ("created", None, [], None),
])
def test_shutdown_verdict(state, exit_code, evidence, clean):
    assert e.shutdown_verdict(state, exit_code, evidence) is clean
