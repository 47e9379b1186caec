# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/rollback_images.yml against a real demo stack, run as an operator runs it.

One scenario for the whole file: snapshot the healthy stack (v1), deploy a broken release
(a v2 image of this test's own, so that the tags a rollback adds to it are this test's),
then `--check`, the rollback, a second rollback and `--check` again. The scenario records
what the engine and the disk looked like after each step; every test asserts one promise.
"""

from __future__ import annotations

import re

import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

ROLLED_BACK_TAG = re.compile(r"lastgood-demo/app:rolled-back-\d{8}T\d{6}Z(-\d+)?")


class Scenario(ansible_run.PlaybookScenario):
    def __init__(self, stack, client, work):
        super().__init__(stack, client, work)
        self.v2_id = None

    def state(self):
        watched = (self.v2_id,) if self.v2_id else ()
        return ansible_run.stack_state(self.client, self.stack, self.backup_root, watched_images=watched)


@pytest.fixture(scope="module")
def scenario(module_stack, docker_client, tmp_path_factory):
    stack = module_stack()
    scenario = Scenario(stack, docker_client, tmp_path_factory.mktemp("rollback"))
    try:
        snapshot = scenario.step("snapshot", "snapshot")
        assert snapshot.rc == 0, snapshot.describe()
        scenario.snapshot_id = snapshot.outcome()["snapshot_id"]
        scenario.manifest = ansible_run.read_manifest(scenario.backup_root, stack.project, scenario.snapshot_id)
        scenario.v1_id = docker_client.images.get(stacks.APP_V1).id
        assert scenario.manifest["services"]["app"]["image_id"] == scenario.v1_id

        # The deploy that broke the stack: the app reference moves to the broken release.
        scenario.v2_id = ansible_run.throwaway_image(docker_client, stacks.APP_V2, "lastgood-test/app",
                                                     stack.project + "-v2", stack.project)
        stack.tag_app(scenario.v2_id)
        stack.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: stack.image_id("app") == scenario.v2_id, 30, message="app runs v2")
        scenario.states["deployed"] = scenario.state()

        scenario.step("check", "rollback_images", check=True)
        scenario.step("rollback", "rollback_images")
        scenario.health = {service: stack.health(service) for service in ("app", "db", "static")}
        scenario.answer = stack.get_json("app", "/health")
        scenario.step("again", "rollback_images", extra_vars={"lastgood_snapshot_id": scenario.snapshot_id})
        scenario.step("check again", "rollback_images", check=True)
        yield scenario
    finally:
        stack.destroy()  # frees the throwaway image of its container first
        ansible_run.remove_snapshot_pins(docker_client, scenario.backup_root)
        if scenario.v2_id:
            ansible_run.remove_image(docker_client, scenario.v2_id)


def succeeded(scenario, label):
    run = scenario.runs[label]
    assert run.rc == 0, run.describe()
    assert run.recap["failures"] == 0
    return run


def report_lines(run):
    """The lines the playbook printed for the operator (the outcome role's report)."""
    lines = []
    for result in run.results_of_module("ansible.builtin.debug"):
        message = result.get("msg")
        lines += message if isinstance(message, list) else [str(message)]
    return lines


def test_check_mode_prints_the_plan_and_changes_nothing(scenario):
    run = succeeded(scenario, "check")
    assert scenario.states["check"] == scenario.states["deployed"]
    lines = report_lines(run)
    project = scenario.stack.project
    assert any(re.fullmatch(r"tag [0-9a-f]{12} as lastgood-demo/app:%s" % project, line) for line in lines), lines
    assert any(line.startswith("recreate app") for line in lines), lines
    assert not any(line.startswith(("recreate db", "recreate static")) for line in lines), lines
    outcome = run.outcome()
    assert outcome["check_mode"] is True
    assert outcome["result"] == "planned"
    assert outcome["services_changed"] == ["app"]
    assert outcome["snapshot_id"] == scenario.snapshot_id


def test_every_service_runs_the_snapshot_image_again(scenario):
    succeeded(scenario, "rollback")
    state = scenario.states["rollback"]
    project = scenario.stack.project
    for service, entry in scenario.manifest["services"].items():
        container = state["containers"]["%s-%s-1" % (project, service)]
        assert container[1] == entry["image_id"], service
    # The configured reference resolves to the recorded image, so compose keeps running it.
    assert state["app_reference"] == scenario.manifest["services"]["app"]["image_id"] == scenario.v1_id


def test_only_the_service_whose_image_changed_is_recreated(scenario):
    succeeded(scenario, "rollback")
    before = scenario.states["deployed"]["containers"]
    after = scenario.states["rollback"]["containers"]
    assert sorted(before) == sorted(after)
    app = "%s-app-1" % scenario.stack.project
    assert after[app][0] != before[app][0]
    # Same container ID and start time: neither recreated nor restarted.
    assert {n: c for n, c in after.items() if n != app} == {n: c for n, c in before.items() if n != app}


def test_the_replaced_image_keeps_a_rolled_back_tag(scenario):
    succeeded(scenario, "rollback")
    before = scenario.states["deployed"]["tags"][scenario.v2_id]
    after = scenario.states["rollback"]["tags"][scenario.v2_id]
    added = sorted(set(after) - set(before))
    assert len(added) == 1 and ROLLED_BACK_TAG.fullmatch(added[0]), (before, after)
    # The broken release is no longer what the reference names.
    assert scenario.stack.app_image in before and scenario.stack.app_image not in after


def test_the_health_gate_passes_and_the_outcome_is_published(scenario):
    run = succeeded(scenario, "rollback")
    assert scenario.health == {"app": "healthy", "db": "healthy", "static": "healthy"}
    assert scenario.answer == (200, {"status": "ok", "version": "v1"})
    # The preflight only validates the checks (healthy: null); the gate after the rollback probes.
    gate = [r for r in run.results_of_module("lastgood.rollback.health_check") if r.get("healthy") is not None]
    assert [r["healthy"] for r in gate] == [True]
    outcome = run.outcome()
    assert outcome["tier"] == "images"
    assert outcome["snapshot_id"] == scenario.snapshot_id
    assert outcome["services_changed"] == ["app"]
    assert outcome["healthy"] is True
    assert outcome["result"] == "success"
    assert outcome["check_mode"] is False
    assert isinstance(outcome["duration_s"], float)
    assert 0 < outcome["duration_s"] <= run.duration_s


def test_a_second_run_changes_nothing(scenario):
    succeeded(scenario, "rollback")
    run = succeeded(scenario, "again")
    assert run.recap["changed"] == 0
    assert scenario.states["again"] == scenario.states["rollback"]
    assert run.outcome()["services_changed"] == []
    assert run.outcome()["snapshot_id"] == scenario.snapshot_id
    assert run.outcome()["healthy"] is True


def test_check_mode_after_the_rollback_plans_nothing(scenario):
    run = succeeded(scenario, "check again")
    assert run.recap["changed"] == 0
    assert scenario.states["check again"] == scenario.states["again"]
    assert run.outcome()["services_changed"] == []


def test_verify_finds_the_stack_healthy_and_matching_its_snapshot(scenario):
    run = ansible_run.run_playbook("verify", scenario.inventory)
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["tier"] == "verify"
    assert outcome["healthy"] is True
    assert outcome["snapshot_id"] == scenario.snapshot_id
    assert outcome["differences"]["any"] is False, outcome["differences"]
    assert scenario.state() == scenario.states["check again"]
