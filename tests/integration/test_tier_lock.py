# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tier run on its own while another run holds the project's lock, against a real demo stack.

AWX runs different job templates at the same time (allow_simultaneous only stops a second job
of the same template), and an operator may start a tier playbook while a deploy or a rollback
is under way. One scenario: snapshot the healthy stack, break its configuration (.env) and its
image (a v2 of this test's own), let a live process on this host hold the lock as a deploy
would, then run the tier 1 and tier 2 playbooks (and tier 2 in check mode), the code tier's module
and the full tier's volume and Redis restore modules: each is refused with one line naming the
holder, and nothing changes (the code tier's undo step too). Once the holder's process is gone, the same tier playbook goes ahead:
in check mode it leaves the dead holder's lock alone; for real, its module takes the lock over for
its own run while it works, leaves none behind and records the run in the audit log and the
metrics; run again, with nothing left to change, it records nothing in the audit log. Last, a
module given break_lock takes a live (hung) run's lock over and says so.
"""

from __future__ import annotations

import json
import subprocess

import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks


class LockWatch(stacks.Watch):
    """Reads the lock file every 2 ms while a block runs; `.seen` holds each distinct content
    (None: no lock file) in the order seen."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.seen = []

    def look(self):
        try:
            content = json.loads(self.path.read_text())
        except FileNotFoundError:
            content = None
        except ValueError:
            content = {}  # caught mid-write: the lock is written by a rename, so this is rare
        if not self.seen or self.seen[-1] != content:
            self.seen.append(content)

    def reasons(self):
        return [content.get("reason") if content else None for content in self.seen]


class Scenario(ansible_run.PlaybookScenario):
    def __init__(self, stack, client, work):
        super().__init__(stack, client, work)
        self.v2_id = None
        self.holder = ansible_run.OtherRunLock(self.backup_root, stack.project)
        self.hung = ansible_run.OtherRunLock(self.backup_root, stack.project, reason="deploy 4.3")
        self.watched = {}
        self.metrics = None

    def state(self):
        watched = (self.v2_id,) if self.v2_id else ()
        return dict(ansible_run.stack_state(self.client, self.stack, self.backup_root, watched_images=watched),
                    env=(self.stack.dir / ".env").read_text(), git_refs=self.git("for-each-ref"))

    def audit(self):
        path = self.backup_root / self.stack.project / "audit.jsonl"
        return [json.loads(text) for text in path.read_text().splitlines()]

    def git(self, *args):
        return subprocess.run(["git", "-C", str(self.stack.dir)] + list(args), capture_output=True, text=True,
                              check=True).stdout


@pytest.fixture(scope="module")
def scenario(module_stack, docker_client, tmp_path_factory):
    stack = module_stack()
    scenario = Scenario(stack, docker_client, tmp_path_factory.mktemp("tier-lock"))
    try:
        # A git work tree, so that the code tier's module gets as far as the lock.
        scenario.git("init", "-q")
        scenario.git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "--allow-empty", "-m", "good")
        snapshot = scenario.step("snapshot", "snapshot")
        assert snapshot.rc == 0, snapshot.describe()

        scenario.v2_id = ansible_run.throwaway_image(docker_client, stacks.APP_V2, "lastgood-test/app",
                                                     stack.project + "-v2", stack.project)
        stack.tag_app(scenario.v2_id)
        env = stack.dir / ".env"
        env.write_text(env.read_text() + "APP_EXTRA_LATENCY_MS=7\n")
        stack.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: stack.image_id("app") == scenario.v2_id, 30, message="app runs v2")

        # The image tier's runs count themselves in the textfile metrics, as an operator's would.
        scenario.metrics = tmp_path_factory.mktemp("tier-lock-textfile")
        metrics = {"lastgood_metrics_dir": str(scenario.metrics)}
        scenario.holder.hold()
        scenario.states["broken"] = scenario.state()
        scenario.step("config", "rollback_config")
        scenario.step("images", "rollback_images", extra_vars=metrics)
        scenario.step("images check", "rollback_images", check=True, extra_vars=metrics)
        scenario.runs["code"] = ansible_run.run_module(
            scenario.inventory, "git_revert",
            {"project_dir": str(stack.dir), "backup_root": str(scenario.backup_root), "target": "HEAD"},
            scenario.work)
        scenario.states["code"] = scenario.state()
        # The code tier's undo step (its failure path) moves the tree as much: refused too.
        scenario.runs["code undo"] = ansible_run.run_module(
            scenario.inventory, "git_revert",
            {"project_dir": str(stack.dir), "backup_root": str(scenario.backup_root), "state": "restored",
             "backup_ref_id": "tier-lock"},
            scenario.work)
        scenario.states["code undo"] = scenario.state()
        # The full tier's data modules, as an operator's own playbook would call them: refused
        # before the archive is even looked at (there is none), so the message tells the lock's story.
        lock_args = {"backup_root": str(scenario.backup_root), "snapshot_id": "tier-lock"}
        scenario.runs["volume"] = ansible_run.run_module(
            scenario.inventory, "volume_restore",
            dict(lock_args, volume=stack.project + "_pgdata", archive=str(scenario.work / "absent.tar"),
                 sha256="0" * 64, project_name=stack.project),
            scenario.work)
        scenario.states["volume"] = scenario.state()
        scenario.runs["redis"] = ansible_run.run_module(
            scenario.inventory, "redis_restore",
            dict(lock_args, project_dir=str(stack.dir), service="redis", archive=str(scenario.work / "absent.rdb"),
                 sha256="0" * 64),
            scenario.work)
        scenario.states["redis"] = scenario.state()
        # Bad input to the guard itself: a project name that would leave the backup root.
        scenario.runs["unsafe project"] = ansible_run.run_module(
            scenario.inventory, "volume_restore",
            dict(lock_args, volume=stack.project + "_pgdata", archive=str(scenario.work / "absent.tar"),
                 sha256="0" * 64, project_name="../" + stack.project),
            scenario.work)
        scenario.states["unsafe project"] = scenario.state()

        scenario.holder.release()
        lock = scenario.backup_root / stack.project / "rollback.lock"
        with LockWatch(lock) as scenario.watched["holder gone check"]:
            scenario.step("holder gone check", "rollback_images", check=True)
        with LockWatch(lock) as scenario.watched["holder gone"]:
            scenario.step("holder gone", "rollback_images", extra_vars=dict(metrics, lastgood_reason="v2 fails /health"))
        scenario.step("again", "rollback_images", extra_vars=metrics)
        # A live run holds the lock again; the operator knows it is hung and breaks it (break_lock),
        # as emergency recovery's fallback does with lastgood_break_lock. In check mode first.
        scenario.hung.hold()
        code_args = {"project_dir": str(stack.dir), "backup_root": str(scenario.backup_root), "target": "HEAD",
                     "break_lock": True}
        with LockWatch(lock) as scenario.watched["break check"]:
            scenario.runs["break check"] = ansible_run.run_module(scenario.inventory, "git_revert", code_args,
                                                                  scenario.work, check=True)
        with LockWatch(lock) as scenario.watched["break"]:
            scenario.runs["break"] = ansible_run.run_module(scenario.inventory, "git_revert", code_args, scenario.work)
        scenario.hung.release()
        scenario.runs["record without metrics_dir"] = ansible_run.run_module(
            scenario.inventory, "rollback_run",
            {"state": "record", "project_name": stack.project, "tier": "images", "result": "success", "started_epoch": 0},
            scenario.work)
        yield scenario
    finally:
        scenario.holder.release()
        scenario.hung.release()
        stack.destroy()
        ansible_run.remove_snapshot_pins(docker_client, scenario.backup_root)
        if scenario.v2_id:
            ansible_run.remove_image(docker_client, scenario.v2_id)


@pytest.mark.parametrize("label", ["config", "images", "images check", "code", "code undo", "volume", "redis"])
def test_a_tier_run_on_its_own_is_refused_while_another_run_holds_the_lock(scenario, label):
    run = scenario.runs[label]
    assert run.rc != 0, run.describe()
    assert scenario.holder.refused(run.failure_msg(), scenario.stack.project), run.describe()
    assert scenario.states[label] == scenario.states["broken"], "a refused %s run changed something" % label


def test_the_tier_goes_ahead_once_the_holder_is_gone(scenario):
    run = scenario.runs["holder gone"]
    assert run.rc == 0, run.describe()
    assert scenario.stack.image_id("app") != scenario.v2_id
    assert run.outcome()["services_changed"] == ["app"]


def test_a_tier_run_on_its_own_holds_the_lock_while_it_works_and_releases_it(scenario):
    """With the dead holder's lock in place, the image tier's module takes it over for its own
    run (so that a deploy or another tier started meanwhile is refused) and leaves no lock."""
    reasons = scenario.watched["holder gone"].reasons()
    assert "compose_image_restore on its own: v2 fails /health" in reasons, reasons
    assert reasons[0] == "deploy 4.2" and reasons[-1] is None, reasons


def test_a_check_run_on_its_own_takes_no_lock(scenario):
    run = scenario.runs["holder gone check"]
    assert run.rc == 0, run.describe()
    assert scenario.watched["holder gone check"].reasons() == ["deploy 4.2"]


def test_an_unsafe_project_name_is_a_one_line_error_that_changes_nothing(scenario):
    run = scenario.runs["unsafe project"]
    assert run.rc != 0, run.describe()
    result = run.result()
    assert result["msg"] == ("project name '../%s' is not a safe name (letters, digits, '.', '_', '-'; no '..', no '/')"
                             % scenario.stack.project), run.describe()
    assert scenario.states["unsafe project"] == scenario.states["broken"]


def test_a_tier_run_on_its_own_that_changed_something_leaves_one_audit_line(scenario):
    """Refused runs, the check run and the second run (nothing to change) leave no line; the run
    that rolled the image back leaves one, saying who, what it did and to which snapshot."""
    lines = scenario.audit()
    assert [line["action"] for line in lines] == ["compose_image_restore", "git_revert"], lines
    line = lines[0]
    assert scenario.runs["again"].rc == 0 and scenario.runs["again"].outcome()["services_changed"] == []
    assert (line["kind"], line["action"], line["result"], line["changed"]) == ("tier", "compose_image_restore", "success", True)
    assert line["tiers"] == ["images"], line
    assert line["reason"] == "compose_image_restore on its own: v2 fails /health" and line["project"] == scenario.stack.project
    assert line["to"] == scenario.runs["snapshot"].outcome()["snapshot_id"], line
    assert line["user"] and line["controller"] and line["host"], line
    assert any("app" in action for action in line["actions"]), line
    assert 0 < line["duration_s"] < scenario.runs["holder gone"].duration_s, line


def test_a_tier_run_on_its_own_counts_itself_in_the_metrics_unless_refused_or_planned(scenario):
    """The run refused by the lock and the check run are not counted (the orchestrator counts
    neither its refusals nor its plans); the run that rolled back and the one that found nothing
    to do are, as successful image rollbacks."""
    prom = (scenario.metrics / ("lastgood_%s.prom" % scenario.stack.project)).read_text()
    labels = 'project="%s",result="%%s",tier="images"' % scenario.stack.project
    assert "lastgood_rollbacks_total{%s} 2" % (labels % "success") in prom, prom
    assert "lastgood_rollbacks_total{%s} 0" % (labels % "failed") in prom, prom
    assert 'lastgood_rollback_duration_seconds{project="%s",tier="images"}' % scenario.stack.project in prom, prom
    assert "lastgood_rollback_last_success_timestamp_seconds" in prom, prom


def test_recording_a_run_without_its_metrics_directory_is_a_one_line_error(scenario):
    run = scenario.runs["record without metrics_dir"]
    assert run.rc != 0 and run.result()["msg"] == "state=record needs metrics_dir", run.describe()


def test_break_lock_takes_a_live_runs_lock_over_says_so_and_leaves_none(scenario):
    """With break_lock, the code tier's module goes ahead although a live run holds the lock: the
    result warns, the audit line names whose lock it took, and no lock is left behind (the other
    run, should it go on, finds it no longer holds the lock). In check mode nothing is taken."""
    run = scenario.runs["break"]
    assert run.rc == 0, run.describe()
    assert "took the project's lock over from a live run on request (break_lock)" in json.dumps(run.result().get("warnings")), \
        run.describe()
    reasons = scenario.watched["break"].reasons()
    assert reasons[0] == "deploy 4.3" and "git_revert on its own" in reasons and reasons[-1] is None, reasons
    line = scenario.audit()[-1]
    assert (line["action"], line["result"], line["tiers"]) == ("git_revert", "success", ["code"]), line
    assert "reason: deploy 4.3" in line["lock_taken_over_from"] and "ops-other" in line["lock_taken_over_from"], line

    check = scenario.runs["break check"]
    assert check.rc == 0, check.describe()
    assert scenario.watched["break check"].reasons() == ["deploy 4.3"]
