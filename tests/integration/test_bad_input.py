# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bad input to playbooks/snapshot.yml and playbooks/rollback_images.yml: a clear one-line
error and nothing changed - no tag moved, no container recreated or restarted, no snapshot
written.

The stack is set up so that a rollback that went ahead WOULD change things: its app runs a
broken release (a v2 image of this test's own, so that any tag added to it is this test's)
while the last-known-good snapshot records v1.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

GONE_ID = "sha256:" + "0" * 64  # a syntactically valid image ID no engine has


class Bench:
    def __init__(self, stack, client, work):
        self.stack = stack
        self.client = client
        self.work = work
        self.backup_root = work / "backups"
        self.root = self.backup_root / stack.project
        self.inventory = ansible_run.write_inventory(work, ansible_run.stack_host_vars(stack, self.backup_root))
        self.v2_id = None
        self.gone_id = None
        self.lkg = None
        self.gone_snapshot = None

    def deploy_app(self, image_id, healthy):
        self.stack.tag_app(image_id)
        self.stack.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: self.stack.image_id("app") == image_id, 30, message="app runs %s" % image_id)
        if healthy:
            self.stack.wait_health("app", "healthy")

    def snapshot(self):
        run = ansible_run.run_playbook("snapshot", self.inventory)
        assert run.rc == 0, run.describe()
        return run.outcome()["snapshot_id"]

    def forge(self, name, source, edit, fix_checksum=True):
        """A copy of snapshot `source` named `name` whose manifest.json bytes went through edit()."""
        target = self.root / name
        shutil.copytree(self.root / source, target)
        data = (target / "manifest.json").read_bytes()
        ansible_run.rewrite_manifest(target, edit(data), fix_checksum=fix_checksum)
        return name

    def state(self):
        return ansible_run.stack_state(self.client, self.stack, self.backup_root, watched_images=(self.v2_id,))


@pytest.fixture(scope="module")
def bench(module_stack, docker_client, tmp_path_factory):
    stack = module_stack()
    bench = Bench(stack, docker_client, tmp_path_factory.mktemp("bad-input"))
    label = stack.project
    try:
        # A snapshot of an image that is then removed, pin and all (a prune after a deploy).
        bench.gone_id = ansible_run.throwaway_image(docker_client, stacks.APP_V1, "lastgood-test/app",
                                                    label + "-gone", label + "-gone")
        bench.deploy_app(bench.gone_id, healthy=True)
        bench.gone_snapshot = bench.snapshot()
        # The last known good snapshot: v1.
        bench.deploy_app(docker_client.images.get(stacks.APP_V1).id, healthy=True)
        bench.lkg = bench.snapshot()
        ansible_run.remove_image(docker_client, bench.gone_id)
        assert ansible_run.image_id_or_none(docker_client, bench.gone_id) is None
        # The broken release runs.
        bench.v2_id = ansible_run.throwaway_image(docker_client, stacks.APP_V2, "lastgood-test/app", label + "-v2", label)
        bench.deploy_app(bench.v2_id, healthy=False)
        yield bench
    finally:
        stack.destroy()  # frees the throwaway images of their containers first
        ansible_run.remove_snapshot_pins(docker_client, bench.backup_root)
        for image in (bench.gone_id, bench.v2_id):
            if image:
                ansible_run.remove_image(docker_client, image)


def flip_a_digit(data):
    """One byte changed, still valid JSON: only the checksum can tell."""
    position = data.index(b'"created_at": "') + len(b'"created_at": "') + 3
    replacement = b"1" if data[position:position + 1] != b"1" else b"2"
    return data[:position] + replacement + data[position + 1:]


def break_json(data):
    return data.rstrip().rstrip(b"}") + b",\n"


def with_image_ids(**image_ids):
    def edit(data):
        manifest = json.loads(data)
        for service, image in image_ids.items():
            manifest["services"][service]["image_id"] = image
        return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return edit


def run_and_assert_nothing_changed(bench, playbook, pattern, extra_vars=None, env=None):
    """Run a playbook that must refuse; returns its one-line message."""
    before = bench.state()
    run = ansible_run.run_playbook(playbook, bench.inventory, extra_vars=extra_vars, env=env)
    assert run.rc == 2, run.describe()
    assert run.recap["changed"] == 0, run.describe()
    message = run.failure_msg()
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert re.search(pattern, message), message
    after = bench.state()
    assert after == before, "something changed"
    # Refusals are published for AWX like any other outcome.
    outcome = run.outcome()
    assert outcome["result"] == "failed"
    assert outcome["services_changed"] == []
    assert outcome["healthy"] is None  # no gate ran: nothing is known about health
    return message


BOTH = pytest.mark.parametrize("playbook", ["snapshot", "rollback_images"])


@BOTH
def test_missing_project_directory(bench, playbook):
    missing = bench.work / "no-such-project"
    run_and_assert_nothing_changed(bench, playbook, r"%s.*does not exist" % re.escape(str(missing)),
                                   extra_vars={"lastgood_project_dir": str(missing)})


@BOTH
def test_missing_compose_file(bench, playbook):
    run_and_assert_nothing_changed(bench, playbook, r"compose file .*/no-such-compose\.yaml does not exist",
                                   extra_vars={"lastgood_compose_files": ["no-such-compose.yaml"]})


@BOTH
def test_docker_engine_unreachable(bench, playbook):
    message = run_and_assert_nothing_changed(bench, playbook, r"(?i)docker",
                                             env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert re.search(r"(?i)unreachable|cannot connect|no such file", message), message


@BOTH
def test_malformed_health_check_url(bench, playbook):
    checks = [{"name": "app-health", "url": "http//127.0.0.1:x", "status": [200], "timeout_s": 2}]
    run_and_assert_nothing_changed(bench, playbook, r"app-health.*(?i:malformed|invalid).*url|url.*http//127\.0\.0\.1:x",
                                   extra_vars={"lastgood_health_checks": checks})


def test_snapshot_id_that_does_not_exist(bench):
    run_and_assert_nothing_changed(bench, "rollback_images", r"20000101T000000Z.*does not exist",
                                   extra_vars={"lastgood_snapshot_id": "20000101T000000Z"})


def test_unsafe_snapshot_id(bench):
    run_and_assert_nothing_changed(bench, "rollback_images", r"'\.\./x'.*not a safe name",
                                   extra_vars={"lastgood_snapshot_id": "../x"})


def test_manifest_with_a_broken_checksum(bench):
    forged = bench.forge("broken-checksum", bench.lkg, flip_a_digit, fix_checksum=False)
    run_and_assert_nothing_changed(bench, "rollback_images", r"does not match its checksum",
                                   extra_vars={"lastgood_snapshot_id": forged})


def test_manifest_with_broken_json(bench):
    forged = bench.forge("broken-json", bench.lkg, break_json)
    run_and_assert_nothing_changed(bench, "rollback_images", r"not valid JSON",
                                   extra_vars={"lastgood_snapshot_id": forged})


def test_image_no_longer_present(bench):
    message = run_and_assert_nothing_changed(bench, "rollback_images", r"no longer present",
                                             extra_vars={"lastgood_snapshot_id": bench.gone_snapshot})
    assert "app" in message and bench.gone_id in message, message


def test_every_missing_image_is_reported_before_anything_changes(bench):
    # app's recorded image is present and differs from what runs, so a rollback that changed
    # services one by one would have retagged app before finding db's and static's gone.
    forged = bench.forge("db-and-static-gone", bench.lkg, with_image_ids(db=GONE_ID, static=GONE_ID))
    message = run_and_assert_nothing_changed(bench, "rollback_images", r"no longer present",
                                             extra_vars={"lastgood_snapshot_id": forged})
    assert re.search(r"\bdb\b", message) and re.search(r"\bstatic\b", message), message
    assert not re.search(r"\bapp\b", message), message
