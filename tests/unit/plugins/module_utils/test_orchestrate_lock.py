# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the lock guard of the tier modules (module_utils/_orchestrate.refuse_if_locked,
lock_for_module): a tier run on its own is refused while another live run holds the project's
lock; otherwise it holds the lock while it works and records what it changed in the audit log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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


# --- a tier module on its own: its audit line and the lock's release, in a real module process ---

MODULE = """
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.lastgood.rollback.plugins.module_utils import _orchestrate as orch

module = AnsibleModule(argument_spec=dict(orch.HOLDER_ARGUMENT_SPEC, root=dict(type="path"), how=dict(type="str"),
                                          snapshot_id=dict(type="str")), supports_check_mode=True)
orch.lock_for_module(module, module.params["root"], "shop", "config_restore")
how = module.params["how"]
if how == "changed":
    module.exit_json(changed=True, actions=["put back .env", "recreate app"])
if how == "unchanged":
    module.exit_json(changed=False, actions=[])
if how == "failed after a change":
    module.fail_json(msg="recreating app failed: no such image", changed=True, actions=["put back .env"])
if how == "refused":
    module.fail_json(msg="nothing changed: snapshot 20261201T000000Z is damaged")
raise RuntimeError("the module crashed")
"""


def run_module(tmp_path, how, check_mode=False):
    """Run MODULE in a process of its own, as Ansible runs a module; returns its result."""
    collections = Path(orch.__file__).parents[5]  # .../<here>/ansible_collections/lastgood/rollback/plugins/module_utils
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "root": str(tmp_path), "how": how, "snapshot_id": "20261201T000000Z", "holder": me(),
        "_ansible_check_mode": check_mode}}))
    script = tmp_path / "tier_module.py"
    script.write_text(MODULE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(collections), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(script), str(args)], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.stdout.strip() or "crashed" in proc.stderr, proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def audit(tmp_path):
    path = tmp_path / PROJECT / orch.AUDIT
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def project_root(tmp_path):
    (tmp_path / PROJECT).mkdir()
    return tmp_path


def test_a_run_on_its_own_that_changed_something_leaves_its_audit_line_and_no_lock(project_root):
    result = run_module(project_root, "changed")
    assert result["changed"] is True and "warnings" not in result, result
    (line,) = audit(project_root)
    assert (line["kind"], line["action"], line["result"], line["changed"], line["tiers"]) == (
        "tier", "config_restore", "success", True, ["config"])
    assert line["actions"] == ["put back .env", "recreate app"] and line["to"] == "20261201T000000Z"
    assert line["user"] == "ops" and line["controller"] == HOST and line["reason"] == "config_restore on its own"
    assert not (project_root / PROJECT / orch.LOCK).exists()


@pytest.mark.parametrize("how", ["unchanged", "refused"])
def test_a_run_on_its_own_that_changed_nothing_leaves_no_line(project_root, how):
    result = run_module(project_root, how)
    assert not result.get("changed"), result
    assert audit(project_root) == []
    assert not (project_root / PROJECT / orch.LOCK).exists()


def test_a_failure_after_a_change_is_recorded_as_failed(project_root):
    result = run_module(project_root, "failed after a change")
    assert result["failed"] is True
    (line,) = audit(project_root)
    assert (line["result"], line["changed"], line["message"]) == ("failed", True, "recreating app failed: no such image")
    assert not (project_root / PROJECT / orch.LOCK).exists()


def test_a_crash_is_recorded_and_the_lock_still_goes(project_root):
    assert run_module(project_root, "crash") is None
    (line,) = audit(project_root)
    assert (line["result"], line["changed"], line["message"]) == ("failed", None, "config_restore ended without a result")
    assert not (project_root / PROJECT / orch.LOCK).exists()


def test_a_check_run_takes_no_lock_and_writes_no_line(project_root):
    run_module(project_root, "changed", check_mode=True)
    assert audit(project_root) == []


def test_an_audit_log_that_cannot_be_written_is_a_warning_of_the_result(project_root):
    (project_root / PROJECT / orch.AUDIT).mkdir()  # not a file: appending fails
    result = run_module(project_root, "changed")
    assert result["changed"] is True
    # The raw module result: ansible-core >= 2.19 gives each warning as a structure, older ones as a string.
    assert "audit line of this run could not be written" in json.dumps(result["warnings"]), result
    assert not (project_root / PROJECT / orch.LOCK).exists()


# -- resuming an interrupted run -------------------------------------------------------------------

PLAN = {"snapshot_id": "20261130T090000Z", "tier": "auto", "escalate": True}


@pytest.mark.parametrize("asked, why", [
    (dict(snapshot_id="20261130T090000Z", tier="auto", escalate=True), None),
    (dict(), None),  # what the new run leaves unsaid is the interrupted plan's
    (dict(snapshot_id="20261201T080000Z"), "snapshot 20261201T080000Z, not 20261130T090000Z"),
    (dict(tier="full", escalate=True), "tier full, not auto"),
    (dict(tier="auto", escalate=False), "escalate false, not true"),
    (dict(snapshot_id="s2", tier="full"), "snapshot s2, not 20261130T090000Z; tier full, not auto"),
])
def test_only_the_same_request_resumes_an_interrupted_run(asked, why):
    assert orch.not_resumable(PLAN, **asked) == why


def test_a_plan_without_a_target_is_resumed_by_any_run():
    # A deploy's plan, or one written before plans named their snapshot.
    assert orch.not_resumable({}, snapshot_id="s1", tier="full", escalate=False) is None


@pytest.mark.parametrize("taken_for, renewed_with, lasts", [(14400, None, 14400), (14400, 600, 600), (None, None, 3600)])
def test_a_step_renews_the_lease_for_as_long_as_the_lock_was_taken(tmp_path, taken_for, renewed_with, lasts):
    """A long restore's lock (lastgood_lock_ttl_s=14400) is not cut to the default hour by its first step."""
    root = os.path.join(str(tmp_path), PROJECT)
    os.makedirs(root)
    orch.acquire_lock(root, me(), taken_for or orch.LOCK_TTL_S, HOST)
    before = time.time()
    orch.renew_lock(root, me(), renewed_with)
    lease = json.loads(Path(root, orch.LOCK).read_text())
    assert before + lasts - 1 <= lease["expires_at_epoch"] <= time.time() + lasts
    assert lease["ttl_s"] == lasts


def test_retention_keeps_what_interrupted_runs_need(tmp_path):
    """A rollback to an explicit older snapshot and a deploy, both interrupted: a snapshot taken
    meanwhile prunes neither the rollback's target, nor its safety snapshot, nor the deploy's
    "before" snapshot."""
    from ansible_collections.lastgood.rollback.plugins.module_utils import _manifest

    root = tmp_path / "proj"
    for index in range(1, 7):
        (root / ("s%d" % index)).mkdir(parents=True)
        (root / ("s%d" % index) / "manifest.json").write_text("{}")
    _manifest.set_last_known_good(str(root), "s5")
    (root / "journal.json").write_text(json.dumps({"plan": {"snapshot_id": "s1"}, "steps": [
        {"step": "attempt-1:full:safety_snapshot", "status": "done", "data": {"safety_snapshot_id": "s3"}}]}))
    (root / "journal-deploy.json").write_text(json.dumps({"plan": {}, "steps": [
        {"step": "snapshot", "status": "done", "data": {"snapshot_id": "s2", "last_known_good": True}}]}))
    (root / "journal-broken.json").write_text("not json")
    assert orch.run_snapshots(str(root)) == ["s1", "s2", "s3"]
    assert orch.run_snapshots(str(tmp_path / "absent")) == []
    assert _manifest.retention_plan(str(root), 3, protect=orch.run_snapshots(str(root))) == ["s4"]
    assert _manifest.retention_plan(str(root), 3) == ["s1", "s2", "s3"]


def test_an_interrupted_runs_journal_refuses_in_one_line_naming_each_run(tmp_path, other_run):
    root = tmp_path / PROJECT
    root.mkdir()
    orch.refuse_if_interrupted(str(root), "why")  # none: nothing to say
    assert orch.interrupted_runs(str(tmp_path / "absent")) == []
    rollback = orch.new_journal("rollback", "5xx", "ops", PLAN, other_run, started_epoch=1796112000)
    deploy = orch.new_journal("deploy", "4.3", "ops", {}, other_run, started_epoch=1796112060)
    orch.save_journal(str(root), rollback)
    orch.save_journal(str(root), deploy)
    (root / "journal-emergency.json").write_text("{not json")
    assert [(run["kind"], run["run_id"]) for run in orch.interrupted_runs(str(root))] == [
        ("rollback", rollback["run_id"]), ("deploy", deploy["run_id"]), ("emergency", "unknown")]
    with pytest.raises(orch.OrchestrateError) as refused:
        orch.refuse_if_interrupted(str(root), "the stack may be half rolled back")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(
        "nothing changed: interrupted rollback and deploy and emergency runs have not finished (run %s, started %s;"
        % (rollback["run_id"], rollback["started_at"]))
    assert "the stack may be half rolled back. Resume it with playbooks/rollback.yml" in message


def _snapshot(root, snapshot_id, image_id, commit="c1"):
    from ansible_collections.lastgood.rollback.plugins.module_utils import _manifest
    staging = _manifest.start_staging(root)
    manifest = {"id": snapshot_id, "services": {"app": {"image": "shop:1", "image_id": image_id}},
                "git": {"commit": commit}, "files": {}}
    return _manifest.finish_staging(staging, root, snapshot_id, manifest)


def test_a_state_rolled_back_away_from_marks_the_snapshots_that_record_it(tmp_path):
    root = str(tmp_path)
    _snapshot(root, "20261201T100000Z", "sha256:good")
    _snapshot(root, "20261201T110000Z", "sha256:broken")
    marked = orch.mark_bad_state(root, {"images": {"app": "sha256:broken"}, "commit": "c1"}, "rolled back",
                                 keep={"20261201T100000Z"})
    assert marked == ["20261201T110000Z"]
    assert len((tmp_path / orch.BAD_STATES).read_text().splitlines()) == 1


def test_a_rollback_of_configuration_only_marks_no_snapshot_of_the_good_images(tmp_path):
    """The target records the same images and commit: what was bad was a file, not them."""
    root = str(tmp_path)
    for snapshot_id in ("20261201T090000Z", "20261201T100000Z", "20261201T110000Z"):
        _snapshot(root, snapshot_id, "sha256:good")
    marked = orch.mark_bad_state(root, {"images": {"app": "sha256:good"}, "commit": "c1"}, "rolled back",
                                 keep={"20261201T110000Z"})
    assert marked == []
    assert not any((tmp_path / snapshot_id / "BAD").exists() for snapshot_id in os.listdir(root))
    assert not (tmp_path / orch.BAD_STATES).exists()
