# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/rollback.yml (the orchestrator) against a real demo stack.

A broken release of the app image is rolled back by `auto`, which picks the image tier; the
run leaves an audit line, a report, an archived journal and the bad state remembered. Then the
faults: a second run while a live run holds the lock, a lock left by a dead run, a run killed
in the middle and run again, the full tier without confirmation.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time

import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks


def process_start(pid):
    with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
        stat = handle.read()
    return int(stat[stat.rfind(")") + 2:].split()[19])


class Receiver:
    """A local webhook receiver on 127.0.0.1: keeps every POST (path, headers, JSON body)."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (name required by BaseHTTPRequestHandler)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", stacks.free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.server.server_address[1], path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Orchestrated:
    """The stack as the orchestrator's host (ansible_run.stack_host) and what the tests do to it."""

    def __init__(self, host):
        self.stack, self.work, self.inventory = host.stack, host.work, host.inventory
        self.backup_root, self.root = host.backup_root, host.root
        self.v2_id = None

    def run(self, extra_vars=None, check=False, env=None):
        return ansible_run.run_playbook("rollback", self.inventory, extra_vars=extra_vars, check=check, env=env)

    def break_app(self):
        self.stack.tag_app(self.v2_id)
        self.stack.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: self.stack.image_id("app") == self.v2_id, 30, message="app runs v2")

    def containers(self):
        return {service: self.stack.container_id(service) for service in ("app", "db", "static")}

    def audit(self):
        path = self.root / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def write_lock(self, pid, pid_start, host=None, reason="a test holds it"):
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "rollback.lock").write_text(json.dumps({
            "host": host or socket.gethostname(), "pid": pid, "pid_start": pid_start, "user": "alice",
            "started_at": "2026-11-30T10:00:00.000000Z", "reason": reason,
            "expires_at_epoch": time.time() + 3600, "expires_at": "later"}))


@pytest.fixture(scope="module")
def orch(module_stack, docker_client, tmp_path_factory):
    with ansible_run.stack_host(module_stack(), tmp_path_factory.mktemp("orchestrator"), docker_client) as host:
        found = Orchestrated(host)
        snapshot = ansible_run.run_playbook("snapshot", found.inventory)
        assert snapshot.rc == 0, snapshot.describe()
        found.snapshot_id = snapshot.outcome()["snapshot_id"]
        found.v1_id = docker_client.images.get(stacks.APP_V1).id
        project = host.stack.project
        found.v2_id = ansible_run.throwaway_image(docker_client, stacks.APP_V2, "lastgood-test/app", project + "-v2", project)
        host.images.append(found.v2_id)
        found.receiver = Receiver()
        try:
            found.webhooks = [
                {"url": found.receiver.url("/generic"), "headers": {"Authorization": "Bearer hook-token-9d2"}},
                {"url": found.receiver.url("/slack"), "format": "slack", "min_level": "warning"},
            ]
            yield found
        finally:
            found.receiver.close()


def test_auto_rolls_an_image_breakage_back_with_the_image_tier_and_records_it(orch):
    orch.break_app()
    # Someone snapshotted the broken release: once rolled back away from, it is marked bad.
    broken = ansible_run.run_playbook("snapshot", orch.inventory, extra_vars={"snapshot_gate_deadline_s": 2})
    assert "NOT marked last known good" in broken.failure_msg(), broken.describe()
    broken_id = broken.outcome()["snapshot_id"]
    before = orch.containers()

    plan = orch.run(check=True)
    assert plan.rc == 0, plan.describe()
    planned = plan.outcome()
    assert planned["result"] == "planned"
    assert planned["planned_attempts"] == [["images"], ["full"]]
    assert orch.containers() == before, "check mode changed containers"
    assert not (orch.root / "rollback.lock").exists() and not (orch.root / "journal.json").exists()

    metrics = orch.work / "textfile"
    metrics.mkdir()
    run = orch.run(extra_vars={"lastgood_reason": "v2 fails /health", "lastgood_metrics_dir": str(metrics),
                               "lastgood_notify_webhooks": orch.webhooks})
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["result"] == "success" and outcome["healthy"] is True
    assert outcome["tiers"] == ["images"] and outcome["escalations"] == 0
    assert outcome["snapshot_id"] == orch.snapshot_id
    assert orch.stack.image_id("app") == orch.v1_id
    after = orch.containers()
    assert after["db"] == before["db"] and after["static"] == before["static"], "unchanged services were recreated"

    # The record: one audit line, a report, the journal archived, the lock released.
    audit = orch.audit()
    assert len(audit) == 1
    line = audit[0]
    assert line["result"] == "success" and line["tiers"] == ["images"] and line["reason"] == "v2 fails /health"
    assert line["from"]["images"]["app"] == orch.v2_id and line["to"]["snapshot_id"] == orch.snapshot_id
    assert line["user"] and line["host"] and line["duration_s"] > 0
    assert "attempt-1" in line["step_durations_s"]
    report = (orch.root / "runs" / line["run_id"] / "report.md").read_text()
    assert "SUCCESS" in report and "images" in report and "v2 fails /health" in report
    # The image tier ran inside the run's first module run, and the journal says so.
    steps = json.loads((orch.root / "runs" / line["run_id"] / "journal.json").read_text())["steps"]
    tier_steps = [step for step in steps if step["step"] == "attempt-1:images"]
    assert [step["status"] for step in tier_steps] == ["done"], steps
    assert tier_steps[0]["data"]["services_changed"] == ["app"]
    assert outcome["services_changed"] == ["app"]
    assert "images: recreate app" in run.stdout, run.describe()
    assert not (orch.root / "journal.json").exists() and not (orch.root / "rollback.lock").exists()
    prom = (metrics / ("lastgood_%s.prom" % orch.stack.project)).read_text()
    assert 'lastgood_rollbacks_total{project="%s",result="success",tier="images"} 1' % orch.stack.project in prom, prom
    bad = [json.loads(x) for x in (orch.root / "bad-states.jsonl").read_text().splitlines()]
    assert bad[-1]["images"]["app"] == orch.v2_id
    assert (orch.root / broken_id / "BAD").exists(), "the snapshot of the broken release was not marked bad"
    assert not (orch.root / orch.snapshot_id / "BAD").exists()

    # Success is level info: the generic hook (min info) hears it, the Slack one (min warning) does not.
    assert [path for path, _h, _b in orch.receiver.received] == ["/generic"]
    path, headers, body = orch.receiver.received[0]
    assert body["event"] == "rollback_success" and body["level"] == "info"
    assert body["fields"]["tiers"] == "images" and orch.stack.project in body["title"]
    assert headers["Authorization"] == "Bearer hook-token-9d2"
    assert "hook-token-9d2" not in run.stdout + run.stderr, "a webhook secret was shown"


def test_a_second_run_finds_nothing_to_do_and_changes_nothing(orch):
    before = orch.containers()
    run = orch.run()
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["result"] == "success" and outcome["tiers"] == [] and outcome["healthy"] is True
    assert "nothing to roll back" in outcome["message"]
    assert orch.containers() == before


def test_a_run_killed_on_a_matching_stack_checks_its_health_again_and_restores_nothing(orch):
    """Killed right after it opened its journal (its plan: only the full tier, since nothing
    differs), an auto run on a stack that matches its snapshot asks the stack's health again when
    resumed, rather than going on to restore the data of a healthy stack."""
    before = orch.containers()
    journal = orch.root / "journal.json"
    interrupted = ansible_run.kill_at_journal_step("rollback", orch.inventory, journal, "attempt-1", timeout=60)
    assert interrupted["plan"]["attempts"] == [["full"]], interrupted["plan"]

    run = orch.run()
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["resumed"] is True and outcome["run_id"] == interrupted["run_id"]
    assert outcome["result"] == "success" and outcome["tiers"] == [] and "nothing to roll back" in outcome["message"]
    assert orch.containers() == before
    assert not journal.exists() and not (orch.root / "rollback.lock").exists()


def test_a_live_lock_refuses_a_second_rollback_at_once_naming_the_holder(orch):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        orch.write_lock(holder.pid, process_start(holder.pid), reason="deploy 4.2 rollback by alice")
        orch.break_app()
        before = orch.containers()
        started = time.monotonic()
        orch.receiver.received.clear()
        run = orch.run(extra_vars={"lastgood_notify_webhooks": orch.webhooks})
        elapsed = time.monotonic() - started
        assert run.rc != 0
        msg = run.failure_msg()
        assert "another rollback holds the lock" in msg
        assert str(holder.pid) in msg and socket.gethostname() in msg and "deploy 4.2 rollback by alice" in msg
        assert "2026-11-30T10:00:00" in msg
        assert orch.containers() == before and orch.stack.image_id("app") == orch.v2_id
        assert json.loads((orch.root / "rollback.lock").read_text())["pid"] == holder.pid, "the holder's lock was touched"
        assert elapsed < 30
        assert run.outcome()["result"] == "refused"
        # A refusal is level warning: both hooks hear it, Slack in its own format.
        assert sorted(path for path, _h, _b in orch.receiver.received) == ["/generic", "/slack"]
        slack = [b for p, _h, b in orch.receiver.received if p == "/slack"][0]
        assert "REFUSED" in slack["text"] and slack["blocks"][0]["type"] == "section"
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_died_is_taken_over(orch):
    # The lock of the previous test names a process that no longer exists.
    assert (orch.root / "rollback.lock").exists()
    run = orch.run()
    assert run.rc == 0, run.describe()
    assert run.outcome()["result"] == "success" and orch.stack.image_id("app") == orch.v1_id
    assert not (orch.root / "rollback.lock").exists()


def test_a_run_killed_half_way_resumes_when_run_again(orch):
    orch.break_app()
    bad_states = orch.root / "bad-states.jsonl"
    remembered = len(bad_states.read_text().splitlines())
    journal = orch.root / "journal.json"
    interrupted = ansible_run.kill_at_journal_step("rollback", orch.inventory, journal, "attempt-1", timeout=60)
    assert (orch.root / "rollback.lock").exists(), "the killed run's lock is gone"

    run = orch.run()
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["resumed"] is True and outcome["run_id"] == interrupted["run_id"]
    # The operator sees it at the start: the plan's task name says which run resumed.
    names = [name for name, _result in run.task_results()]
    assert any(name.endswith("; run %s, resumed after an interruption" % interrupted["run_id"]) for name in names), names
    assert outcome["result"] == "success" and orch.stack.image_id("app") == orch.v1_id
    line = orch.audit()[-1]
    assert line["run_id"] == interrupted["run_id"] and line["resumed"] == 1
    assert not journal.exists() and not (orch.root / "rollback.lock").exists()
    # The state rolled back away from is remembered as the run first found it (the image tier
    # may have run before the kill: the resumed run then compares a stack that matches).
    bad = [json.loads(text) for text in bad_states.read_text().splitlines()]
    assert len(bad) == remembered + 1 and bad[-1]["images"]["app"] == orch.v2_id, bad[remembered:]


def test_a_run_asking_for_another_tier_closes_the_interrupted_one_and_starts_its_own(orch):
    """Not a resume: the interrupted run's plan is not replayed under the new request's name."""
    orch.break_app()
    journal = orch.root / "journal.json"
    interrupted = ansible_run.kill_at_journal_step("rollback", orch.inventory, journal, "attempt-1", timeout=60)

    run = orch.run(extra_vars={"lastgood_tier": "images"})
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["resumed"] is False and outcome["run_id"] != interrupted["run_id"]
    assert outcome["result"] == "success" and orch.stack.image_id("app") == orch.v1_id
    closed, done = orch.audit()[-2:]
    assert closed["run_id"] == interrupted["run_id"] and closed["result"] == "interrupted"
    assert closed["message"] == "interrupted; closed by a later rollback run (tier images, not auto)"
    assert done["run_id"] == outcome["run_id"] and done["resumed"] == 0 and done["tiers"] == ["images"]
    assert not journal.exists() and not (orch.root / "rollback.lock").exists()


def test_a_rollback_to_an_older_snapshot_makes_it_last_known_good(orch):
    """deploy.md's "undo a release that passed": the newer snapshot records the state rolled back
    away from and is marked bad; the pointer moves to the snapshot restored, so the next plain
    rollback is not refused for a bad last known good, and finds nothing to do."""
    orch.break_app()
    forced = ansible_run.run_playbook("snapshot", orch.inventory,
                                      extra_vars={"lastgood_force": True, "snapshot_gate_deadline_s": 2})
    assert forced.rc == 0, forced.describe()
    newer = forced.outcome()["snapshot_id"]
    assert ansible_run.last_known_good(orch.backup_root, orch.stack.project) == newer

    run = orch.run(extra_vars={"lastgood_snapshot_id": orch.snapshot_id, "lastgood_reason": "undo release v2"})
    assert run.rc == 0, run.describe()
    assert run.outcome()["result"] == "success" and orch.stack.image_id("app") == orch.v1_id
    assert (orch.root / newer / "BAD").exists(), "the snapshot of the state rolled back away from is not marked bad"
    assert ansible_run.last_known_good(orch.backup_root, orch.stack.project) == orch.snapshot_id

    again = orch.run()
    assert again.rc == 0, again.describe()
    assert again.outcome()["tiers"] == [] and "nothing to roll back" in again.outcome()["message"]


def test_the_full_tier_without_confirmation_is_refused_and_changes_nothing(orch):
    orch.break_app()
    before = orch.containers()
    run = orch.run(extra_vars={"lastgood_tier": "full"})
    assert run.rc != 0
    assert "lastgood_confirm=yes" in run.failure_msg()
    assert orch.containers() == before and orch.stack.image_id("app") == orch.v2_id
    assert not (orch.root / "rollback.lock").exists(), "a refused run kept the lock"
    assert orch.audit()[-1]["result"] == "failed"
    assert not any(s for s in orch.root.iterdir() if s.name.startswith("2") and (s / "BAD").exists()
                   and "safety" in (s / "manifest.json").read_text()), "a safety snapshot was taken"


def test_an_image_tier_that_fails_after_the_lock_closes_the_run_and_changes_nothing(orch, docker_client):
    """The image tier applied by the run's first module run verifies every image before the first
    tag moves; a recorded image gone from the host fails the run with one line, changes nothing,
    and the run is still closed: audit line, journal archived with the failed step, lock released."""
    project = orch.stack.project
    v3_id = ansible_run.throwaway_image(docker_client, stacks.APP_V1, "lastgood-test/app", project + "-v3", project)
    try:
        orch.stack.tag_app(v3_id)
        orch.stack.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: orch.stack.image_id("app") == v3_id, 30, message="app runs v3")
        snapshot = ansible_run.run_playbook("snapshot", orch.inventory)
        assert snapshot.rc == 0, snapshot.describe()
        orch.break_app()
        ansible_run.remove_snapshot_pins(docker_client, orch.backup_root)
        ansible_run.remove_image(docker_client, v3_id)
        before = orch.containers()
        audit_lines = len(orch.audit())

        run = orch.run()
        assert run.rc != 0
        msg = run.failure_msg()
        assert "nothing changed" in msg and "no longer present locally" in msg, run.describe()
        assert orch.containers() == before and orch.stack.image_id("app") == orch.v2_id
        assert not (orch.root / "rollback.lock").exists(), "the failed run kept the lock"
        assert not (orch.root / "journal.json").exists(), "the failed run's journal was left to resume"
        audit = orch.audit()
        assert len(audit) == audit_lines + 1 and audit[-1]["result"] == "failed"
        steps = json.loads((orch.root / "runs" / audit[-1]["run_id"] / "journal.json").read_text())["steps"]
        assert [s["status"] for s in steps if s["step"] == "attempt-1:images"] == ["failed"], steps
        assert run.outcome()["result"] == "failed"
    finally:
        ansible_run.remove_image(docker_client, v3_id)
