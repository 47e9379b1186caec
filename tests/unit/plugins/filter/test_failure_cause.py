# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The failure_cause filter: what every role's rescue reports."""

from __future__ import annotations

import pytest

from ansible_collections.lastgood.rollback.plugins.filter.failure_cause import FilterModule, failure_cause


@pytest.mark.parametrize("result, cause", [
    ({"failed": True, "msg": "volume uploads: sha256 mismatch"}, "volume uploads: sha256 mismatch"),
    # A loop: the first failed item's message, not Ansible's summary.
    ({"failed": True, "msg": "One or more items failed", "results": [
        {"failed": False, "msg": "ok", "item": "media"},
        {"failed": True, "msg": "volume uploads: archive missing", "item": "uploads"},
        {"failed": True, "msg": "later", "item": "logs"}]}, "volume uploads: archive missing"),
    # Items skipped or without a message: the task's message.
    ({"failed": True, "msg": "One or more items failed", "results": [{"skipped": True}, "not a dict"]},
     "One or more items failed"),
    # A failed command: the last line it wrote, not "non-zero return code".
    ({"failed": True, "msg": "non-zero return code", "rc": 1, "cmd": ["docker", "compose", "up"],
      "stderr": "Step 3/3 : COPY missing /x\nCOPY failed: file not found\n\n", "stdout": "Building web\n"},
     "COPY failed: file not found"),
    ({"failed": True, "msg": "non-zero return code", "rc": 2, "stderr": "", "stdout": "only here\n"}, "only here"),
    ({"failed": True, "msg": "non-zero return code", "rc": 2, "stderr": "", "stdout": ""}, "non-zero return code"),
    # A looped command: its failed item's last line.
    ({"failed": True, "msg": "One or more items failed", "results": [
        {"failed": True, "msg": "non-zero return code", "rc": 1, "stderr": "no space left on device\n", "item": "a"}]},
     "no space left on device"),
    ({"failed": True}, "unknown error"),
    (None, "unknown error"),
    ("a string", "unknown error"),
])
def test_the_cause_of_a_failure(result, cause):
    assert failure_cause(result) == cause


def test_the_default_can_be_given_and_the_filter_is_registered():
    assert failure_cause({}, default="unknown") == "unknown"
    assert FilterModule().filters()["failure_cause"] is failure_cause
