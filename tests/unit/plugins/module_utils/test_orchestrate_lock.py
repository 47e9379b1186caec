# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the lock guard of the tier modules (module_utils/_orchestrate.refuse_if_locked):
a tier run on its own is refused while another live run holds the project's lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _orchestrate as orch

HOST = socket.gethostname()
PROJECT = "shop"


@pytest.fixture
def other_run():
    """A live process on this host standing for another run's controller."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield {"host": HOST, "pid": proc.pid, "pid_start": orch.process_start_time(proc.pid), "user": "ops-other",
               "reason": "deploy 4.2"}
    finally:
        proc.kill()
        proc.wait()


def hold(root, holder, ttl_s=3600):
    os.makedirs(os.path.join(root, PROJECT), exist_ok=True)
    state, _previous = orch.acquire_lock(os.path.join(root, PROJECT), holder, ttl_s, HOST)
    assert state == "taken"


def me():
    return {"host": HOST, "pid": os.getpid(), "pid_start": orch.process_start_time(os.getpid()), "user": "ops"}


def test_no_lock_lets_the_tier_run(tmp_path):
    assert orch.refuse_if_locked(str(tmp_path), PROJECT, me(), HOST) is None


def test_the_lock_of_this_same_run_lets_the_tier_run(tmp_path):
    hold(str(tmp_path), me())
    assert orch.same_holder(orch.refuse_if_locked(str(tmp_path), PROJECT, me(), HOST), me())


def test_a_live_other_run_refuses_the_tier_naming_it(tmp_path, other_run):
    hold(str(tmp_path), other_run)
    with pytest.raises(orch.OrchestrateError) as caught:
        orch.refuse_if_locked(str(tmp_path), PROJECT, me(), HOST)
    message = str(caught.value)
    assert message.startswith("nothing changed: another run holds the lock of project shop")
    assert "pid %d" % other_run["pid"] in message and "ops-other" in message and "deploy 4.2" in message
    assert "\n" not in message


def test_a_run_without_a_holder_is_refused_too(tmp_path, other_run):
    hold(str(tmp_path), other_run)
    with pytest.raises(orch.OrchestrateError):
        orch.refuse_if_locked(str(tmp_path), PROJECT, None, HOST)


def test_a_dead_holder_does_not_stop_the_tier(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    hold(str(tmp_path), {"host": HOST, "pid": proc.pid, "pid_start": 1, "user": "gone"})
    assert orch.refuse_if_locked(str(tmp_path), PROJECT, me(), HOST) is None


def test_a_holder_on_another_machine_counts_until_its_lease_runs_out(tmp_path):
    remote = {"host": "controller-elsewhere", "pid": 4242, "pid_start": 7, "user": "awx"}
    hold(str(tmp_path), remote, ttl_s=3600)
    with pytest.raises(orch.OrchestrateError):
        orch.refuse_if_locked(str(tmp_path), PROJECT, me(), HOST)
    path = Path(tmp_path, PROJECT, orch.LOCK)
    lock = json.loads(path.read_text())
    lock["expires_at_epoch"] = time.time() - 5
    path.write_text(json.dumps(lock))
    assert orch.refuse_if_locked(str(tmp_path), PROJECT, me(), HOST) is None


def test_an_unreadable_lock_refuses_the_tier_as_it_refuses_the_orchestrator(tmp_path):
    path = Path(tmp_path, PROJECT, orch.LOCK)
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(orch.OrchestrateError):
        orch.acquire_lock(str(path.parent), me(), 3600, HOST)
    with pytest.raises(orch.OrchestrateError):
        orch.refuse_if_locked(str(tmp_path), PROJECT, me(), HOST)
