# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: failure_cause
short_description: The one-line cause of a failed task, also of a looped one
version_added: 0.2.0
author: lastgood.rollback contributors
description:
  - Takes C(ansible_failed_result) in a C(rescue) block and returns the message an operator needs.
  - A looped task that failed only says C(One or more items failed); the message of its first failed item is
    returned instead.
  - A command that failed (M(ansible.builtin.command)) only says C(non-zero return code); the last line it wrote to
    its standard error (else to its standard output) is returned instead.
  - Every role of the collection reports its failures, in audit lines, reports and webhooks, through this filter.
positional: _input
options:
  _input:
    description: The failed result, normally C(ansible_failed_result). Anything else gives O(default).
    type: raw
    required: true
  default:
    description: What to return when the result carries no message.
    type: str
    default: unknown error
"""

EXAMPLES = r"""
- name: Restore and say why it failed
  block:
    - name: Restore every volume
      lastgood.rollback.volume_restore:
        volume: "{{ item }}"
        archive: "/var/backups/lastgood/shop/20261130T090000Z/volumes/{{ item }}.tar"
      loop: [uploads, media]
  rescue:
    - name: Fail with the failed volume's own message, not "One or more items failed"
      ansible.builtin.fail:
        msg: "restore failed: {{ ansible_failed_result | lastgood.rollback.failure_cause }}"
"""

RETURN = r"""
_value:
  description: The failed item's or the task's C(msg) (for a failed command, its last line of output), else O(default).
  type: str
"""

from collections.abc import Mapping


# What ansible.builtin.command says of any command that failed.
COMMAND_FAILED = "non-zero return code"


def failure_cause(result, default="unknown error"):
    """The msg of the first failed item of a looped result, else the result's msg (a failed
    command's last line of output instead of COMMAND_FAILED), else `default`."""
    if not isinstance(result, Mapping):
        return default
    for item in result.get("results") or []:
        if isinstance(item, Mapping) and item.get("failed") and item.get("msg"):
            return _message(item)
    return _message(result) if result.get("msg") else default


def _message(result):
    """The result's msg; for a failed command, the last line it wrote (stderr, else stdout)."""
    if result["msg"] == COMMAND_FAILED:
        for stream in ("stderr", "stdout"):
            lines = [line.strip() for line in str(result.get(stream) or "").splitlines() if line.strip()]
            if lines:
                return lines[-1]
    return str(result["msg"])


class FilterModule:
    """lastgood.rollback's filters."""

    def filters(self):
        return {"failure_cause": failure_cause}
