# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/snapshot.yml, run as an operator runs it from the repository root, against a real
demo stack: what the manifest records, when last-known-good moves, retention and the outcome
published with set_stats. Each test has its own backup root; most share one stack."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re

import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

SNAPSHOT_ID = re.compile(r"\d{8}T\d{6}Z(-\d+)?")
SERVICES = ("app", "db", "static")
# For the runs whose gate is meant to fail: the gate polls until its deadline (60 s by default).
SHORT_GATE = {"health_gate_deadline_s": 3}


@pytest.fixture(scope="module")
def shared_stack(module_stack):
    return module_stack()


class Bench:
    """A stack, a backup root of the test's own and an inventory naming both."""

    def __init__(self, stack, client, directory, **host_vars):
        self.stack = stack
        self.client = client
        self.dir = directory
        self.backup_root = directory / "backups"
        self.root = self.backup_root / stack.project
        self.inventory = ansible_run.write_inventory(
            directory, ansible_run.stack_host_vars(stack, self.backup_root, **host_vars))

    def snapshot(self, check=False, **extra_vars):
        return ansible_run.run_playbook("snapshot", self.inventory, extra_vars=extra_vars or None, check=check)

    def snapshots(self):
        return ansible_run.snapshot_ids(self.backup_root, self.stack.project)

    def last_known_good(self):
        return ansible_run.last_known_good(self.backup_root, self.stack.project)

    def manifest(self, snapshot_id):
        return ansible_run.read_manifest(self.backup_root, self.stack.project, snapshot_id)

    def bad_reason(self, snapshot_id):
        """The reason in the snapshot's BAD marker, or None when it is not marked bad."""
        marker = self.backup_root / self.stack.project / snapshot_id / "BAD"
        return json.loads(marker.read_text())["reason"] if marker.exists() else None

    def containers(self):
        return ansible_run.project_containers(self.client, self.stack.project)


@pytest.fixture
def bench(shared_stack, docker_client, tmp_path):
    bench = Bench(shared_stack, docker_client, tmp_path)
    yield bench
    ansible_run.remove_snapshot_pins(docker_client, bench.backup_root)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def id_time(snapshot_id):
    """The UTC second a snapshot id names."""
    stamp = snapshot_id.split("-")[0]
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unhealthy_checks(stack):
    """The stack's checks with one that cannot pass: the app answers, without that text."""
    checks = ansible_run.stack_health_checks(stack)
    checks[0] = dict(checks[0], body_regex="text-the-app-never-prints")
    return checks


def assert_one_line(message):
    assert message and "\n" not in message.strip() and "Traceback" not in message, message


def test_snapshot_records_what_runs_and_marks_it_last_known_good(bench):
    containers = bench.containers()
    started = utc_now().replace(microsecond=0)
    run = bench.snapshot()
    finished = utc_now()
    assert run.rc == 0, run.describe()
    assert run.recap["failures"] == 0

    assert len(bench.snapshots()) == 1
    snapshot_id = bench.snapshots()[0]
    assert SNAPSHOT_ID.fullmatch(snapshot_id)
    assert started <= id_time(snapshot_id) <= finished
    snapshot_dir = bench.root / snapshot_id
    manifest_path = snapshot_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert (snapshot_dir / "manifest.json.sha256").read_text().split() == [sha256(manifest_path), "manifest.json"]

    assert manifest["id"] == snapshot_id
    assert manifest["created_at"].endswith("Z")
    created_at = datetime.datetime.fromisoformat(manifest["created_at"])
    assert created_at.utcoffset() == datetime.timedelta(0)
    assert started <= created_at <= finished
    assert manifest["project"]["name"] == bench.stack.project

    # Per service the configured reference and the image ID its container really runs.
    assert sorted(manifest["services"]) == list(SERVICES)
    configured = {"app": bench.stack.app_image, "db": "lastgood-demo/postgres:15", "static": "lastgood-demo/static:1"}
    for service in SERVICES:
        entry = manifest["services"][service]
        assert entry["image"] == configured[service]
        assert entry["image_id"] == bench.stack.image_id(service)
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry["image_id"])
        # Pinned, so a prune after the next deploy cannot take it.
        assert entry["pin"].startswith(configured[service].rsplit(":", 1)[0] + ":lastgood-")
        assert snapshot_id in entry["pin"]
        assert ansible_run.image_id_or_none(bench.client, entry["pin"]) == entry["image_id"]
    assert manifest["services"]["app"]["image_id"] == bench.client.images.get(stacks.APP_V1).id

    head = stacks.run(["git", "-C", bench.stack.dir, "rev-parse", "HEAD"]).stdout.strip()
    assert manifest["git"]["commit"] == head
    assert manifest["git"]["branch"] == "main"

    # The configuration files, with their sha256, and copies that match.
    assert {"compose.yaml", ".env"} <= set(manifest["files"])
    for rel, meta in manifest["files"].items():
        assert meta["sha256"] == sha256(bench.stack.dir / rel), rel
        assert sha256(snapshot_dir / "files" / rel) == meta["sha256"], rel

    # The gate passed: last-known-good points at the new snapshot.
    assert os.readlink(bench.root / "last-known-good") == snapshot_id

    outcome = run.outcome()
    assert outcome["tier"] == "snapshot"
    assert outcome["snapshot_id"] == snapshot_id
    assert outcome["healthy"] is True
    assert outcome["services_changed"] == []
    assert isinstance(outcome["duration_s"], float)
    assert 0 < outcome["duration_s"] <= run.duration_s
    assert outcome["last_known_good"] is True
    # A snapshot only reads the stack.
    assert bench.containers() == containers


def test_check_mode_writes_nothing(bench):
    containers = bench.containers()
    run = bench.snapshot(check=True)
    assert run.rc == 0, run.describe()
    assert ansible_run.tree_state(bench.backup_root) == {}
    assert bench.containers() == containers
    outcome = run.outcome()
    assert outcome["check_mode"] is True
    assert outcome["result"] == "planned"
    assert SNAPSHOT_ID.fullmatch(outcome["snapshot_id"])
    assert outcome["last_known_good"] is False


def test_ids_sort_in_time_order_and_retention_keeps_last_known_good_and_newest(bench):
    first = bench.snapshot()
    assert first.rc == 0, first.describe()
    lkg = first.outcome()["snapshot_id"]
    assert bench.last_known_good() == lkg

    unmarked = []
    for _attempt in range(2):
        failed = bench.snapshot(lastgood_health_checks=unhealthy_checks(bench.stack), **SHORT_GATE)
        assert failed.rc == 2, failed.describe()
        snapshot_id = failed.outcome()["snapshot_id"]
        assert snapshot_id in failed.failure_msg()
        assert bench.last_known_good() == lkg
        unmarked.append(snapshot_id)
    # Ids sort in the order the snapshots were taken.
    assert bench.snapshots() == [lkg] + unmarked
    pins = {snapshot_id: bench.manifest(snapshot_id)["services"]["app"]["pin"] for snapshot_id in [lkg] + unmarked}

    # What a snapshot run killed while dumping leaves: kept (another run may be writing it), but said.
    leftover = bench.backup_root / bench.stack.project / ".staging-killedrun"
    leftover.mkdir()
    newest = bench.snapshot(lastgood_keep_snapshots=2)
    assert newest.rc == 0, newest.describe()
    warnings = json.dumps(newest.result("Record images, configuration files, git commit, database dumps, volumes and Redis")
                          .get("warnings"))
    assert ".staging-killedrun" in warnings and "interrupted snapshot run" in warnings, warnings
    assert leftover.is_dir()
    leftover.rmdir()
    newest_id = newest.outcome()["snapshot_id"]
    assert sorted([lkg] + unmarked + [newest_id]) == [lkg] + unmarked + [newest_id]
    # 2 kept: the newest, and the last known good one although it is the oldest.
    assert newest.outcome()["pruned"] == unmarked
    assert bench.snapshots() == [lkg, newest_id]
    assert bench.last_known_good() == newest_id
    # The pruned snapshots' pins are gone; the kept ones' stay.
    pins[newest_id] = bench.manifest(newest_id)["services"]["app"]["pin"]
    assert len(set(pins.values())) == 4
    for snapshot_id, kept in [(lkg, True), (unmarked[0], False), (unmarked[1], False), (newest_id, True)]:
        assert (ansible_run.image_id_or_none(bench.client, pins[snapshot_id]) is not None) is kept, pins[snapshot_id]


def test_explicit_compose_files_and_project_name(shared_stack, docker_client, tmp_path):
    bench = Bench(shared_stack, docker_client, tmp_path, lastgood_compose_files=["compose.yaml"],
                  lastgood_project_name=shared_stack.project)
    try:
        run = bench.snapshot()
        assert run.rc == 0, run.describe()
        manifest = bench.manifest(run.outcome()["snapshot_id"])
        assert manifest["project"]["name"] == shared_stack.project
        assert manifest["project"]["compose_files"] == ["compose.yaml"]
        assert manifest["services"]["app"]["image_id"] == shared_stack.image_id("app")
        assert bench.last_known_good() == manifest["id"]
    finally:
        ansible_run.remove_snapshot_pins(docker_client, bench.backup_root)


def test_project_outside_git_records_git_null(bench):
    git_dir = bench.stack.dir / ".git"
    hidden = bench.stack.dir.parent / (bench.stack.project + ".git-hidden")
    git_dir.rename(hidden)
    try:
        run = bench.snapshot()
    finally:
        hidden.rename(git_dir)
    assert run.rc == 0, run.describe()
    assert bench.manifest(run.outcome()["snapshot_id"])["git"] is None


def test_failed_gate_writes_the_snapshot_but_does_not_mark_it_unless_forced(stack, docker_client, tmp_path):
    broken = stack()
    bench = Bench(broken, docker_client, tmp_path)
    try:
        good = bench.snapshot()
        assert good.rc == 0, good.describe()
        lkg = good.outcome()["snapshot_id"]

        # Deploy the broken release v2: its /health answers 500.
        v2_id = docker_client.images.get(stacks.APP_V2).id
        broken.tag_app(stacks.APP_V2)
        broken.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: broken.image_id("app") == v2_id, 30, message="app runs v2")

        failed = bench.snapshot(**SHORT_GATE)
        assert failed.rc == 2, failed.describe()
        unmarked = failed.outcome()["snapshot_id"]
        assert unmarked != lkg
        assert bench.snapshots() == [lkg, unmarked]
        assert bench.manifest(unmarked)["services"]["app"]["image_id"] == v2_id
        assert bench.last_known_good() == lkg
        message = failed.failure_msg()
        assert_one_line(message)
        assert unmarked in message
        assert "not marked last known good" in message.lower()
        assert failed.outcome()["healthy"] is False
        assert failed.outcome()["last_known_good"] is False
        # Never a target: emergency recovery picks the newest snapshot that verifies.
        assert bench.bad_reason(unmarked).startswith("the stack was not healthy when it was taken: ")
        assert bench.bad_reason(lkg) is None

        forced = bench.snapshot(lastgood_force=True, **SHORT_GATE)
        assert forced.rc == 0, forced.describe()
        forced_id = forced.outcome()["snapshot_id"]
        assert bench.snapshots() == [lkg, unmarked, forced_id]
        assert bench.last_known_good() == forced_id
        assert bench.manifest(forced_id)["services"]["app"]["image_id"] == v2_id
        assert forced.outcome()["healthy"] is False
        assert forced.outcome()["last_known_good"] is True
        assert bench.bad_reason(forced_id) is None
    finally:
        ansible_run.remove_snapshot_pins(docker_client, bench.backup_root)


def test_a_snapshot_waits_for_a_run_in_progress_and_refuses_an_interrupted_ones_half_state(bench):
    """A scheduled snapshot job while a deploy or rollback holds the lock records a stack in the
    middle of a change; after such a run was killed, a snapshot of its half-rolled-back state could
    become last known good, or emergency recovery's newest target. Both are refused, writing nothing
    (check mode too); lastgood_allow_interrupted takes it anyway, under a lock of its own that it
    does not leave behind, and the gate still decides."""
    first = bench.snapshot()
    assert first.rc == 0, first.describe()
    lkg = first.outcome()["snapshot_id"]
    lock = bench.root / "rollback.lock"
    other = ansible_run.OtherRunLock(bench.backup_root, bench.stack.project, reason="rollback 5xx after 4.2")
    try:
        other.hold()
        run_id = other.begin("rollback", plan={"snapshot_id": lkg})
        for check in (False, True):
            refused = bench.snapshot(check=check)
            assert refused.rc == 2, refused.describe()
            assert other.refused(refused.failure_msg(), bench.stack.project), refused.failure_msg()
            assert bench.snapshots() == [lkg] and bench.last_known_good() == lkg

        other.release()  # killed: its lock and journal stay
        for check in (False, True):
            refused = bench.snapshot(check=check)
            assert refused.rc == 2, refused.describe()
            message = refused.failure_msg()
            assert_one_line(message)
            assert "nothing changed: an interrupted rollback run has not finished (run %s" % run_id in message, message
            assert "playbooks/rollback.yml" in message, message
            assert bench.snapshots() == [lkg] and bench.last_known_good() == lkg
            assert json.loads(lock.read_text())["pid"] == other.pid
        assert not (bench.root / "audit.jsonl").exists()

        forced = bench.snapshot(lastgood_allow_interrupted=True)
        assert forced.rc == 0, forced.describe()
        taken = forced.outcome()["snapshot_id"]
        assert bench.snapshots() == [lkg, taken] and bench.last_known_good() == taken
        # The dead run's lock was taken over for the snapshot's own run, and none is left.
        assert not lock.exists()
        assert (bench.root / "journal.json").exists(), "the interrupted run is still there to resume"
        assert not (bench.root / "audit.jsonl").exists(), "a snapshot changes no stack: no audit line"
    finally:
        other.release()
