# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/deploy.yml against a real demo stack: a good release is promoted, a broken one
(an image whose /health fails) and a slow one (answers above the latency limit) are rolled
back automatically, and the run fails saying why."""

from __future__ import annotations

import json
import threading

import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

WATCH = {"lastgood_watch_s": 8, "lastgood_watch_interval_s": 0.5, "lastgood_watch_failures": 3}


@pytest.fixture(scope="module")
def deployed(module_stack, docker_client, tmp_path_factory):
    with ansible_run.stack_host(module_stack(), tmp_path_factory.mktemp("deploy"), docker_client, **WATCH) as found:
        project = found.stack.project
        found.v1_id = docker_client.images.get(stacks.APP_V1).id
        found.v2_id = ansible_run.throwaway_image(docker_client, stacks.APP_V2, "lastgood-test/app", project + "-v2", project)
        found.images.append(found.v2_id)
        found.v2_ref = "lastgood-test/app:%s-v2" % project
        yield found


def deploy(found, env, **extra):
    return ansible_run.run_deploy(found.inventory, env, **extra)


def env_value(found, key):
    return ansible_run.env_file_value(found.stack.dir, key)


def last_known_good(found):
    return (found.root / "last-known-good").resolve().name


def test_a_healthy_release_is_promoted_to_last_known_good(deployed):
    app_before = deployed.stack.container_id("app")
    static_before = deployed.stack.container_id("static")
    # A value with a $ and a " #" reaches the container as given (written quoted); the app ignores
    # an error rate that is not a number.
    run = deploy(deployed, {"APP_EXTRA_LATENCY_MS": "1", "RELEASE_SECRET": "s3cr3t-7f3a9", "APP_ERROR_RATE": "0 #$x"})
    assert run.rc == 0, run.describe()
    assert "APP_ERROR_RATE=0 #$x" in deployed.stack.container("app").attrs["Config"]["Env"]
    outcome = run.outcome()
    assert outcome["result"] == "success" and outcome["verdict"] == "healthy"
    assert outcome["promoted"] and last_known_good(deployed) == outcome["promoted"]
    # The deploy's own outcome: nothing left from the snapshots it took (set_stats merges).
    assert not {"snapshot_dir", "pruned", "last_known_good"} & set(outcome), outcome
    assert env_value(deployed, "APP_EXTRA_LATENCY_MS") == "1"
    assert deployed.stack.container_id("app") != app_before, "the changed service was not recreated"
    assert deployed.stack.container_id("static") == static_before, "an unchanged service was recreated"
    assert env_value(deployed, "RELEASE_SECRET") == "s3cr3t-7f3a9"
    assert "s3cr3t-7f3a9" not in run.stdout + run.stderr, "a .env value was shown"
    deployed.good_snapshot = outcome["promoted"]


def test_a_broken_release_is_rolled_back_and_the_run_fails_saying_why(deployed):
    run = deploy(deployed, {"APP_IMAGE": deployed.v2_ref}, lastgood_reason="release 2")
    assert run.rc != 0
    outcome = run.outcome()
    assert outcome["result"] == "rolled_back" and outcome["verdict"] == "failed"
    assert "failed its watch" in outcome["why"]
    assert outcome["rollback_tiers"] and not {"tier_requested", "escalations", "snapshot_dir"} & set(outcome), outcome
    assert "rolled back" in run.failure_msg() and "failed its watch" in run.failure_msg()
    assert deployed.stack.image_id("app") == deployed.v1_id
    assert env_value(deployed, "APP_IMAGE") == deployed.stack.app_image
    assert deployed.stack.get_json("app", "/health")[0] == 200
    lkg = ansible_run.read_manifest(deployed.backup_root, deployed.stack.project, last_known_good(deployed))
    assert lkg["services"]["app"]["image_id"] == deployed.v1_id, "the broken release became last known good"
    audit = [json.loads(x) for x in (deployed.root / "audit.jsonl").read_text().splitlines()]
    # The rollback runs inside the deploy's lock; the deploy's record closes last and says so.
    assert [line["kind"] for line in audit[-2:]] == ["rollback", "deploy"]
    assert audit[-2]["result"] == "success" and audit[-1]["result"] == "failed"
    assert "rolled back: config, images (healthy)" in audit[-1]["message"]
    assert not (deployed.root / "rollback.lock").exists()


def test_a_release_that_takes_its_time_to_start_is_watched_once_it_answers(deployed):
    """The recreated app listens only 2.5 s after it started: five refused rounds of 0.5 s, more
    than the three failures in a row that fail a watch, are a start, not a failure."""
    run = deploy(deployed, {"APP_STARTUP_DELAY_MS": "2500"})
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["result"] == "success" and outcome["verdict"] == "healthy", outcome
    assert env_value(deployed, "APP_STARTUP_DELAY_MS") == "2500"
    # Counted from the first round, as without a startup allowance, it would have been rolled back.
    run = deploy(deployed, {"APP_STARTUP_DELAY_MS": "2600"}, lastgood_deploy_startup_s=0)
    assert run.rc != 0 and run.outcome()["result"] == "rolled_back", run.describe()
    assert "connection refused" in run.outcome()["why"]
    assert env_value(deployed, "APP_STARTUP_DELAY_MS") == "2500"


def test_a_release_that_crashes_as_it_starts_is_rolled_back_without_waiting_for_its_start(deployed):
    """An app port that is not a number: the recreated app exits 1 at once. Its HTTP check is
    refused as during a start, but the crash of a container the deploy recreated counts at once;
    without that the watch would wait out the 10 min startup allowance."""
    port = env_value(deployed, "APP_PORT")
    run = deploy(deployed, {"APP_PORT": "not-a-port"}, lastgood_deploy_startup_s=600)
    assert run.rc != 0
    outcome = run.outcome()
    assert outcome["result"] == "rolled_back" and outcome["verdict"] == "failed", outcome
    assert "new-containers" in outcome["why"] and "exited (exit code 1)" in outcome["why"], outcome["why"]
    assert env_value(deployed, "APP_PORT") == port
    assert deployed.stack.get_json("app", "/health")[0] == 200


def test_a_release_slower_than_the_latency_limit_is_rolled_back(deployed):
    checks = ansible_run.stack_health_checks(deployed.stack) + [
        {"name": "api", "url": deployed.stack.url("app", "/api"), "status": [200], "timeout_s": 2}]
    run = deploy(deployed, {"APP_EXTRA_LATENCY_MS": "600"}, lastgood_watch_max_latency_ms=300, lastgood_health_checks=checks)
    assert run.rc != 0
    outcome = run.outcome()
    assert outcome["result"] == "rolled_back" and "latency" in outcome["why"]
    assert env_value(deployed, "APP_EXTRA_LATENCY_MS") == "1"
    # Only .env was bad: the earlier snapshots of the same images and commit stay rollback targets.
    assert not (deployed.root / deployed.good_snapshot / "BAD").exists(), "a snapshot of the good images was marked bad"


def test_a_deploy_that_says_nothing_to_deploy_is_refused(deployed):
    run = ansible_run.run_playbook("deploy", deployed.inventory)
    assert run.rc != 0 and "the new version" in run.failure_msg()
    assert not (deployed.root / "rollback.lock").exists()


def test_values_compose_could_not_read_back_are_refused_naming_only_their_keys(deployed):
    before = (deployed.stack.dir / ".env").read_text()
    run = deploy(deployed, {"APP_EXTRA_LATENCY_MS": "7", "TOKEN_A": "pa\\ss\\", "TOKEN_B": "two\nlines", "1BAD": "x"})
    assert run.rc != 0
    message = run.failure_msg()
    assert "TOKEN_A" in message and "TOKEN_B" in message and "1BAD" in message, message
    assert "pa\\ss" not in run.stdout + run.stderr and "two\nlines" not in run.stdout + run.stderr
    assert (deployed.stack.dir / ".env").read_text() == before
    assert not (deployed.root / "rollback.lock").exists()


def test_an_inconclusive_watch_aborts_without_promoting_or_rolling_back(deployed):
    """A Prometheus check that proves nothing (its server unreachable) is inconclusive: the
    deploy neither promotes nor rolls back by default; it stops and says so."""
    checks = ansible_run.stack_health_checks(deployed.stack) + [{
        "name": "error-rate", "type": "prometheus", "url": "http://127.0.0.1:%d" % stacks.free_port(),
        "query": "sum(rate(demo_http_requests_total[30s]))", "threshold": 0.05, "timeout_s": 1}]
    # The state before the deploy cannot be proven healthy either: the operator records it anyway
    # (lastgood_force) and lets the gates report inconclusive instead of stopping.
    run = deploy(deployed, {"APP_EXTRA_LATENCY_MS": "2"}, lastgood_health_checks=checks, lastgood_watch_s=3,
                 lastgood_force=True, lastgood_health_on_inconclusive="report", snapshot_gate_deadline_s=2)
    assert run.rc != 0
    outcome = run.outcome()
    assert outcome["verdict"] == "inconclusive" and outcome["result"] == "failed" and outcome["rolled_back"] is False, outcome["why"]
    assert "inconclusive" in outcome["why"] and "not promoted" in run.failure_msg()
    assert env_value(deployed, "APP_EXTRA_LATENCY_MS") == "2", "the new version was rolled back"
    assert outcome["promoted"] == ""
    # Last known good is the state before this deploy, never the unproven new version.
    lkg = ansible_run.read_manifest(deployed.backup_root, deployed.stack.project, last_known_good(deployed))
    assert lkg["reason"].startswith("before deploy")
    assert not (deployed.root / "rollback.lock").exists()


def test_a_deploy_killed_during_its_watch_resumes_without_snapshotting_the_release(deployed):
    """Run again after a kill, the deploy keeps the interrupted one's snapshot of the state before
    it: the release on trial (running now) never becomes the way back."""
    journal = deployed.root / "journal-deploy.json"
    env = {"APP_EXTRA_LATENCY_MS": "5"}
    interrupted = ansible_run.kill_at_journal_step("deploy", deployed.inventory, journal, "snapshot", status="done",
                                                   extra_vars={"lastgood_deploy_env": env}, timeout=120)
    before_id = [s for s in interrupted["steps"] if s["step"] == "snapshot"][0]["data"]["snapshot_id"]

    run = deploy(deployed, env)
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["result"] == "success" and outcome["run_id"] == interrupted["run_id"]
    taken = [manifest.parent.name for manifest in sorted(deployed.root.glob("*/manifest.json"))
             if (json.loads(manifest.read_text())["reason"] or "").startswith("before deploy %s" % interrupted["run_id"])]
    assert taken == [before_id], "the resumed deploy snapshotted the release on trial"
    audit = json.loads((deployed.root / "audit.jsonl").read_text().splitlines()[-1])
    assert audit["kind"] == "deploy" and audit["run_id"] == interrupted["run_id"] and audit["resumed"] == 1
    assert not journal.exists() and not (deployed.root / "rollback.lock").exists()


def test_a_healthy_release_whose_promotion_fails_closes_its_run_and_says_so(deployed, docker_client):
    """The snapshot that would mark the new version last known good fails (here a volume it must
    archive vanished during the watch; in life a full disk): the new version stays, the run's
    record is closed as failed and the lock released, and the play fails saying what happened."""
    volume = docker_client.volumes.create("lgtest-%s-extra" % deployed.stack.project)
    journal = deployed.root / "journal-deploy.json"
    removed = []

    def remove_after_the_first_snapshot():
        def recorded():
            try:
                return any(step["step"] == "snapshot" for step in json.loads(journal.read_text())["steps"])
            except (OSError, ValueError, KeyError):
                return False
        stacks.wait_until(recorded, 120, interval=0.05, message="the deploy recorded its snapshot")
        volume.remove()
        removed.append(True)

    before = last_known_good(deployed)
    remover = threading.Thread(target=remove_after_the_first_snapshot, daemon=True)
    remover.start()
    try:
        run = deploy(deployed, {"APP_EXTRA_LATENCY_MS": "3"}, lastgood_volumes=[volume.name])
    finally:
        remover.join(timeout=130)
        if not removed:
            volume.remove(force=True)
    assert removed, "the volume was not removed during the deploy"
    assert run.rc != 0
    outcome = run.outcome()
    assert outcome["verdict"] == "healthy" and outcome["result"] == "failed" and outcome["healthy"] is True, outcome
    assert outcome["promoted"] == "" and "does not exist" in outcome["promote_error"]
    assert run.failure_msg().startswith("the new version passed its watch and runs, but marking it last known good "
                                        "failed: "), run.failure_msg()
    assert run.failure_msg().endswith("; not promoted, nothing rolled back")
    assert env_value(deployed, "APP_EXTRA_LATENCY_MS") == "3", "the healthy new version was rolled back"
    # Last known good is the state before this deploy (its own snapshot), never the unrecorded new version.
    assert last_known_good(deployed) != before
    lkg = ansible_run.read_manifest(deployed.backup_root, deployed.stack.project, last_known_good(deployed))
    assert lkg["reason"].startswith("before deploy")
    audit = json.loads((deployed.root / "audit.jsonl").read_text().splitlines()[-1])
    assert audit["kind"] == "deploy" and audit["result"] == "failed"
    assert "marking it last known good failed" in audit["message"]
    assert not journal.exists() and not (deployed.root / "rollback.lock").exists()


def test_a_deploy_plan_is_not_stopped_by_an_interrupted_run_its_real_run_would_close(deployed):
    """In check mode the deploy takes no lock, so its snapshot runs as if on its own; the journal
    of an interrupted rollback, which the real run closes when it starts, must not stop the plan."""
    other = ansible_run.OtherRunLock(deployed.backup_root, deployed.stack.project, reason="rollback 5xx")
    snapshots = sorted(path.name for path in deployed.root.iterdir()) if deployed.root.exists() else []
    try:
        other.hold()
        other.begin("rollback")
        other.release()
        run = ansible_run.run_playbook("deploy", deployed.inventory, check=True,
                                       extra_vars={"lastgood_deploy_env": {"APP_EXTRA_LATENCY_MS": "9"}})
        assert run.rc == 0, run.describe()
        assert run.outcome()["result"] == "planned"
        # The plan is compose's own for the new values: the app would be recreated, nothing else.
        assert run.outcome()["services_changed"] == ["recreate app"], run.outcome()
        assert sorted(path.name for path in deployed.root.iterdir()) == sorted(snapshots + ["journal.json", "rollback.lock"])
        assert env_value(deployed, "APP_EXTRA_LATENCY_MS") != "9"
    finally:
        other.release()
        for name in ("journal.json", "rollback.lock"):
            (deployed.root / name).unlink(missing_ok=True)


def test_a_release_of_new_code_and_env_values_keeps_both(deployed):
    """The code moves first: its stash of uncommitted work (a tracked .env the earlier deploys
    changed) must not take this deploy's own .env values with it; and a newer ref is checked out
    even where rollbacks revert (lastgood_git_mode=revert)."""
    git = ["git", "-C", str(deployed.stack.dir)]
    stacks.run([*git, "commit", "-q", "--allow-empty", "-m", "release next"])
    target = stacks.run([*git, "rev-parse", "HEAD"]).stdout.strip()
    stacks.run([*git, "reset", "-q", "--soft", "HEAD~1"])
    run = deploy(deployed, {"APP_EXTRA_LATENCY_MS": "2"}, lastgood_deploy_git_ref=target, lastgood_git_mode="revert")
    assert run.rc == 0, run.describe()
    assert run.outcome()["result"] == "success"
    assert stacks.run([*git, "rev-parse", "HEAD"]).stdout.strip() == target
    assert env_value(deployed, "APP_EXTRA_LATENCY_MS") == "2"
    assert deployed.stack.get_json("app", "/health")[0] == 200
