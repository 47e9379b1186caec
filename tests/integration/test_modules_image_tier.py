# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image-tier modules one by one, through ansible-playbook, against a real demo stack.

For every case the community.docker pattern: check mode, the real run, check mode again and
the real run again. The check-mode result must equal the real one, check mode must change
nothing on the engine or on disk, and the second real run must change nothing.
"""

from __future__ import annotations

import json
import os
import re

import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

ROLLED_BACK_TAG = re.compile(r"rolled-back-\d{8}T\d{6}Z(-\d+)?")
SERVICES = ["app", "db", "static"]


@pytest.fixture(scope="module")
def bench(module_stack, docker_client, tmp_path_factory):
    """A stack on v1 whose recorded services are known, then "deployed" to a v2 of its own."""
    with ansible_run.stack_host(module_stack(), tmp_path_factory.mktemp("modules"), docker_client) as host:
        stack = host.stack
        info = ansible_run.run_module(host.inventory, "compose_images_info", {"project_dir": str(stack.dir)}, host.work)
        assert info.rc == 0, info.describe()
        recorded = {name: {"image": entry["image"], "image_id": entry["image_id"]}
                    for name, entry in info.result()["services"].items()}
        assert sorted(recorded) == SERVICES
        v1_id = docker_client.images.get(stacks.APP_V1).id
        assert recorded["app"] == {"image": stack.app_image, "image_id": v1_id}

        v2_id = ansible_run.throwaway_image(docker_client, stacks.APP_V2, "lastgood-test/app", stack.project + "-v2",
                                            stack.project)
        host.images.append(v2_id)
        bench = Bench(host, docker_client, recorded, v1_id, v2_id)
        bench.deploy_app(v2_id)
        yield bench


class Bench:
    def __init__(self, host, client, recorded, v1_id, v2_id):
        """`host`: the stack as ansible_run.stack_host has it."""
        self.stack, self.work, self.backup_root, self.inventory = host.stack, host.work, host.backup_root, host.inventory
        self.client = client
        self.recorded = recorded
        self.v1_id = v1_id
        self.v2_id = v2_id

    def run(self, module, args, check=False):
        run = ansible_run.run_module(self.inventory, module, args, self.work, check=check)
        assert run.rc == 0, run.describe()
        return run.result()

    def cycle(self, module, args, observe=None):
        """check, real, check, real; by default observing the stack's containers and images."""
        if observe is None:
            observe = ansible_run.docker_observers(self.stack, [self.v2_id])
        return ansible_run.run_cycle(self.inventory, module, args, self.work, observe=observe)

    def state(self):
        # Only the test's own image: other tests tag the shared v1 image at any time.
        return ansible_run.stack_state(self.client, self.stack, self.backup_root, watched_images=(self.v2_id,))

    def deploy_app(self, image_id):
        """What a deploy does: move the app reference, let compose recreate the container."""
        self.stack.tag_app(image_id)
        self.stack.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: self.stack.image_id("app") == image_id, 30,
                          message="app container runs %s" % image_id)


def normalized(value):
    """A result with the rolled-back-<UTC second> stamps blanked: check mode and the real run
    each take their own time stamp."""
    if isinstance(value, dict):
        return {key: normalized(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    if isinstance(value, str):
        return ROLLED_BACK_TAG.sub("rolled-back-<stamp>", value)
    return value


def comparable(result, keys):
    missing = [key for key in keys if key not in result]
    assert not missing, "result lacks %s: %s" % (missing, result)
    return normalized({key: result[key] for key in keys})


RESTORE_KEYS = ("changed", "services", "recreate", "unchanged", "not_in_snapshot", "actions", "diff")


def assert_check_mode_and_second_run_change_nothing(cycle):
    observed = cycle.observed
    assert observed["check"] == observed["before"], "check mode changed something"
    assert observed["check again"] == observed["run"], "check mode changed something"
    assert observed["run again"] == observed["run"], "the second run changed something"
    assert cycle.results["run again"]["changed"] is False


def test_compose_image_restore_check_real_check_real(bench):
    args = {"project_dir": str(bench.stack.dir), "services": bench.recorded}
    app_container = bench.stack.container_id("app")
    cycle = bench.cycle("compose_image_restore", args)
    assert_check_mode_and_second_run_change_nothing(cycle)
    planned, done, replanned, again = (cycle.results[step] for step, _check in ansible_run.CYCLE)

    assert planned["changed"] is True
    assert planned["recreate"] == ["app"]
    assert planned["unchanged"] == ["db", "static"]
    assert planned["services"]["app"]["before_image_id"] == bench.v2_id
    assert planned["services"]["app"]["after_image_id"] == bench.v1_id
    assert [step["retagged"] for name, step in sorted(planned["services"].items())] == [True, False, False]
    assert comparable(planned, RESTORE_KEYS) == comparable(done, RESTORE_KEYS)

    # The reference names the recorded image again; the replaced one keeps a rolled-back tag.
    before = ansible_run.parse_docker_observation(cycle.observed["before"])
    after = ansible_run.parse_docker_observation(cycle.observed["run"])
    assert before["images"][0] == (bench.v2_id, sorted([bench.stack.app_image, "lastgood-test/app:%s-v2" % bench.stack.project]))
    assert after["images"][0][0] == bench.v1_id
    v2_tags = ansible_run.image_tags(bench.client, bench.v2_id)
    rolled_back = [tag for tag in v2_tags if "rolled-back-" in tag]
    assert len(rolled_back) == 1, v2_tags
    assert re.fullmatch(r"lastgood-demo/app:rolled-back-\d{8}T\d{6}Z(-\d+)?", rolled_back[0])
    assert done["services"]["app"]["rolled_back_tag"] == rolled_back[0]
    assert after["images"][1] == (bench.v2_id, v2_tags)
    assert ansible_run.image_id_or_none(bench.client, bench.stack.app_image) == bench.v1_id
    # Containers are compose_service's business: nothing was recreated.
    assert after["containers"] == before["containers"]
    assert bench.stack.container_id("app") == app_container

    # The container still runs the replaced image, so the restore still says to recreate it.
    assert replanned["changed"] is False
    assert replanned["recreate"] == ["app"]
    assert not any(step["retagged"] for step in replanned["services"].values())
    assert comparable(replanned, RESTORE_KEYS) == comparable(again, RESTORE_KEYS)


def test_compose_image_restore_leaves_stopped_what_the_record_has_stopped(bench):
    """A one-shot job that ran, or a service stopped on purpose: stopped now, on the recorded image,
    and not running in the record either. Nothing to restore, so no run recreates it. Recorded as
    running, the same service is planned for recreation, and check mode says it would change."""
    bench.stack.compose("stop", "static")
    try:
        container = bench.stack.container("static")
        assert container.status == "exited"
        stopped = {"static": dict(bench.recorded["static"], running=False)}
        args = {"project_dir": str(bench.stack.dir), "services": stopped, "recreate": True}
        for check in (True, False, False):
            result = bench.run("compose_image_restore", args, check=check)
            assert result["changed"] is False, result
            assert result["recreate"] == [] and result["unchanged"] == ["static"], result
            assert not any(action.startswith("recreate") for action in result["actions"]), result
        assert bench.stack.container_id("static") == container.id
        assert bench.stack.container("static").status == "exited"

        running = {"static": dict(bench.recorded["static"], running=True)}
        planned = bench.run("compose_image_restore", dict(args, services=running), check=True)
        assert planned["changed"] is True, planned
        assert planned["recreate"] == ["static"]
        assert "recreate static (runs %s)" % bench.stack.image_id("static")[7:19] in planned["actions"]
        # Without recreate the module only names it: the caller recreates.
        named = bench.run("compose_image_restore", dict(args, services=running, recreate=False), check=True)
        assert named["changed"] is False and named["recreate"] == ["static"] and named["actions"] == []
        assert bench.stack.container_id("static") == container.id
    finally:
        bench.stack.compose("start", "static")


def test_compose_image_restore_refuses_an_unknown_only_service(bench):
    args = {"project_dir": str(bench.stack.dir), "services": bench.recorded, "only": ["app", "nosuch"]}
    before = bench.state()
    run = ansible_run.run_module(bench.inventory, "compose_image_restore", args, bench.work)
    assert run.rc == 2, run.describe()
    assert "nosuch" in run.failure_msg()
    assert bench.state() == before


def test_compose_service_recreate_check_real_check_real(bench):
    # The state a restore leaves: the reference names v1, the container still runs v2.
    if bench.stack.image_id("app") != bench.v2_id:
        bench.deploy_app(bench.v2_id)
    bench.stack.tag_app(bench.v1_id)
    app = f"{bench.stack.project}-app-1"
    cycle = bench.cycle("compose_service", {"project_dir": str(bench.stack.dir), "services": ["app"], "wait_timeout": 60})
    assert_check_mode_and_second_run_change_nothing(cycle)
    planned, done, replanned, again = (cycle.results[step] for step, _check in ansible_run.CYCLE)

    assert planned["changed"] is done["changed"] is True
    # The plan (compose's dry run) and the real run name the same steps.
    assert planned["actions"] == done["actions"] == ["recreate app"]
    assert done["ready"] is True
    assert done["services"]["app"]["recreated"] is True

    before = ansible_run.parse_docker_observation(cycle.observed["before"])["containers"]
    after = ansible_run.parse_docker_observation(cycle.observed["run"])["containers"]
    assert after[app][0] != before[app][0]
    assert after[app][1:3] == (bench.v1_id, "running")
    # Only the named service: db and static keep their containers.
    assert {n: c for n, c in after.items() if n != app} == {n: c for n, c in before.items() if n != app}
    assert bench.stack.health("app") == "healthy"

    assert (replanned["changed"], replanned["actions"]) == (again["changed"], again["actions"]) == (False, [])


def test_compose_service_stop_then_start_check_real_check_real(bench):
    static = f"{bench.stack.project}-static-1"
    container_id = bench.stack.container_id("static")

    stop = bench.cycle("compose_service", {"project_dir": str(bench.stack.dir), "services": ["static"],
                                           "state": "stopped", "stop_timeout": 5})
    assert_check_mode_and_second_run_change_nothing(stop)
    results = [(r["changed"], r["actions"]) for r in stop.results.values()]
    assert results == [(True, ["stop static"])] * 2 + [(False, [])] * 2
    stopped = ansible_run.parse_docker_observation(stop.observed["run"])["containers"]
    assert stopped[static][0] == container_id
    assert stopped[static][2] == "exited"

    start = bench.cycle("compose_service", {"project_dir": str(bench.stack.dir), "services": ["static"],
                                            "recreate": "never", "wait_timeout": 60})
    assert_check_mode_and_second_run_change_nothing(start)
    planned, done, replanned, again = (start.results[step] for step, _check in ansible_run.CYCLE)
    assert planned["changed"] is done["changed"] is True
    assert planned["actions"] == done["actions"] == ["start static"]
    assert done["ready"] is True
    started = ansible_run.parse_docker_observation(start.observed["run"])["containers"]
    # Started again, not recreated.
    assert started[static][:3] == (container_id, stopped[static][1], "running")
    assert (replanned["changed"], replanned["actions"]) == (again["changed"], again["actions"]) == (False, [])


MARK_KEYS = ("changed", "snapshot_id", "last_known_good", "previous_last_known_good", "diff")


def marker_reason(result):
    return (result["bad"] or {}).get("reason")


def test_snapshot_mark_check_real_check_real(bench):
    created = bench.run("snapshot_create", {"project_dir": str(bench.stack.dir), "backup_root": str(bench.backup_root),
                                            "reason": "module test"})
    snapshot_id = created["snapshot_id"]
    root = bench.backup_root / bench.stack.project
    snapshot_dir = root / snapshot_id
    assert (snapshot_dir / "manifest.json").is_file()
    assert ansible_run.last_known_good(bench.backup_root, bench.stack.project) is None
    args = {"project_name": bench.stack.project, "backup_root": str(bench.backup_root), "snapshot_id": snapshot_id}
    # The pointer (link target, time) and the marker, in one read-only task.
    observe = [{"ansible.builtin.command": {"argv": ["ls", "-la", "--full-time", str(root), str(snapshot_dir)]}}]

    def cycle(extra):
        run = bench.cycle("snapshot_mark", dict(args, **extra), observe=observe)
        assert_check_mode_and_second_run_change_nothing(run)
        results = list(run.results.values())
        assert results[0]["changed"] is results[1]["changed"] is True
        assert comparable(results[0], MARK_KEYS) == comparable(results[1], MARK_KEYS)
        assert comparable(results[2], MARK_KEYS) == comparable(results[3], MARK_KEYS)
        assert [marker_reason(r) for r in results[:2]] == [marker_reason(r) for r in results[2:]]
        return results

    marked = cycle({"state": "last_known_good"})
    assert os.readlink(root / "last-known-good") == snapshot_id
    assert [(r["previous_last_known_good"], r["last_known_good"]) for r in marked] == [
        (None, snapshot_id), (None, snapshot_id), (snapshot_id, snapshot_id), (snapshot_id, snapshot_id)]

    bad = cycle({"state": "bad", "reason": "broke the checkout"})
    assert (snapshot_dir / "BAD").is_file()
    assert [marker_reason(r) for r in bad] == ["broke the checkout"] * 4
    # A bad snapshot cannot become last known good.
    refused = ansible_run.run_module(bench.inventory, "snapshot_mark", dict(args, state="last_known_good"), bench.work)
    assert refused.rc == 2, refused.describe()
    assert "marked bad" in refused.failure_msg()

    unmarked = cycle({"state": "unmarked"})
    assert not (snapshot_dir / "BAD").exists()
    assert [r["bad"] for r in unmarked] == [None] * 4
    assert os.readlink(root / "last-known-good") == snapshot_id


def test_snapshot_create_publishes_a_snapshot_already_marked_bad(bench):
    """A safety snapshot: never selectable, not even for a moment, even if the run dies right after."""
    created = bench.run("snapshot_create", {"project_dir": str(bench.stack.dir), "backup_root": str(bench.backup_root),
                                            "reason": "safety snapshot (test)", "bad_reason": "replaced by a test"})
    assert created["changed"] is True and created["bad"] == "replaced by a test"
    snapshot_dir = bench.backup_root / bench.stack.project / created["snapshot_id"]
    assert json.loads((snapshot_dir / "BAD").read_text())["reason"] == "replaced by a test"
    info = bench.run("snapshot_info", {"project_dir": str(bench.stack.dir), "backup_root": str(bench.backup_root),
                                       "snapshot_id": created["snapshot_id"], "allow_bad": True})
    assert info["bad"]["reason"] == "replaced by a test"
    refused = ansible_run.run_module(bench.inventory, "snapshot_mark", {
        "project_name": bench.stack.project, "backup_root": str(bench.backup_root),
        "snapshot_id": created["snapshot_id"], "state": "last_known_good"}, bench.work)
    assert refused.rc == 2 and "marked bad" in refused.failure_msg(), refused.describe()
