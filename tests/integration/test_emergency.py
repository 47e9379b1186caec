"""Emergency stop and emergency recovery against the real engine and the demo stack's PostgreSQL.

One stack, in order: two snapshots with data -> emergency stop in check mode (nothing changes) ->
emergency stop under write load with the app already killed (bounded, clean PostgreSQL shutdown,
every acknowledged write present after a restart, diagnostics and audit line) -> recovery in check
mode -> recovery with the newest snapshot's dump damaged (passed over and reported, the previous one
restored, the data-loss window measured) -> no verified snapshot: the code falls back to the last
good commit, the data is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

import ansible_run
import emergency_support as support
import stacks

GRACE_S = 5
DATA_GRACE_S = 30


@pytest.fixture(scope="module")
def emergency(module_stack, docker_client, tmp_path_factory):
    stack = module_stack()
    connect = stack.db_connect()
    support.create_writes_table(connect)
    entry = {"name": "app", "service": "db", "port": stack.ports["db"]}
    with ansible_run.stack_host(stack, tmp_path_factory.mktemp("emergency"), docker_client, lastgood_databases=[entry],
                                lastgood_emergency_grace_s=GRACE_S, lastgood_emergency_data_grace_s=DATA_GRACE_S,
                                lastgood_gate_deadline_s=60) as found:
        found.connect = connect
        found.snapshots = []
        for rows in (100, 50):
            insert_rows(connect, rows)
            run = ansible_run.run_playbook("snapshot", found.inventory)
            assert run.rc == 0, failure(run)
            found.snapshots.append(run.outcome()["snapshot_id"])
        found.rows_at = {found.snapshots[0]: 100, found.snapshots[1]: 150}
        yield found


def insert_rows(connect, rows):
    import psycopg2
    with psycopg2.connect(dbname="app", **connect) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO writes (at) SELECT clock_timestamp() FROM generate_series(1, %s)", (rows,))


def failure(run):
    return "%s\n%s" % ("\n".join("%s: %s" % (name, result.get("msg")) for name, result in run.failures()), run.describe()[-3000:])


def states(stack):
    return {service: stack.container(service).attrs["State"]["Status"] for service in ("app", "db", "static")}


def incident_dirs(emergency):
    root = emergency.backup_root / emergency.stack.project / "incidents"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def git_head(stack):
    return stacks.run(["git", "-C", stack.dir, "rev-parse", "HEAD"]).stdout.strip()


def commit_change(stack, name):
    (stack.dir / name).write_text("a change after the snapshots\n")
    stacks.run(["git", "-C", stack.dir, "add", name])
    stacks.run(["git", "-C", stack.dir, "commit", "-q", "-m", "change " + name])
    return git_head(stack)


def test_stop_in_check_mode_changes_nothing(emergency):
    before = (states(emergency.stack), support.audit_lines(emergency.backup_root, emergency.stack.project), incident_dirs(emergency))
    run = ansible_run.run_playbook("emergency_stop", emergency.inventory, check=True)
    assert run.rc == 0, failure(run)
    assert run.outcome()["result"] == "planned"
    assert (states(emergency.stack), support.audit_lines(emergency.backup_root, emergency.stack.project), incident_dirs(emergency)) == before


def test_a_recovery_refused_by_another_runs_lock_leaves_the_stack_running(emergency):
    """The full tier stops the application only after it holds the lock and has verified the
    snapshot: a recovery refused at the lock leaves every container as it was, running. (Before the
    emergency stop below, while everything runs.)"""
    stack = emergency.stack
    services = ("app", "db", "static")
    before = ({service: stack.container_id(service) for service in services}, states(stack),
              support.count_rows(emergency.connect), git_head(stack))
    with ansible_run.OtherRunLock(emergency.backup_root, stack.project) as other:
        run = ansible_run.run_playbook("emergency_recover", emergency.inventory, timeout=600)
        assert run.rc != 0, run.describe()
        assert "another rollback holds the lock" in run.failure_msg() and "pid %d" % other.pid in run.failure_msg()
        after = ({service: stack.container_id(service) for service in services}, states(stack),
                 support.count_rows(emergency.connect), git_head(stack))
    assert after == before
    assert all(state == "running" for state in after[1].values())
    audit = [line for line in support.audit_lines(emergency.backup_root, stack.project) if line["kind"] == "emergency"][-1]
    assert (audit["action"], audit["result"]) == ("recover", "failed")
    assert "another rollback holds the lock" in audit["message"], audit
    (emergency.backup_root / stack.project / "rollback.lock").unlink()  # its holder is gone


def test_stop_under_write_load_with_a_dead_container_is_bounded_clean_and_loses_no_acknowledged_write(emergency):
    stack = emergency.stack
    stack.container("app").kill()
    writer = support.Writer(emergency.connect)
    writer.start()
    stacks.wait_until(lambda: len(writer.acknowledged) > 50, 20, message="writes acknowledged")
    started = time.monotonic()
    run = ansible_run.run_playbook("emergency_stop", emergency.inventory, extra_vars={"lastgood_reason": "test"})
    took = time.monotonic() - started
    writer.stop()
    assert run.rc == 0, failure(run)
    # Bounded: the grace periods plus ansible's own start-up and a few seconds.
    assert took < GRACE_S + DATA_GRACE_S + 20, took
    outcome = run.outcome()
    assert outcome["result"] == "success"
    assert float(outcome["stop_s"]) < GRACE_S + DATA_GRACE_S + 5
    assert "app" in outcome["were_not_running"] and "app" not in outcome["stopped"]
    assert sorted(outcome["stopped"]) == ["db", "static"]
    assert outcome["clean_shutdown"] is True
    db_end = outcome["shutdown"]["db"][0]
    assert db_end["exit_code"] == 0 and db_end["clean"] is True and "shut down" in db_end["evidence"][0]
    assert all(state != "running" for state in states(stack).values())

    # Diagnostics: the dead container included, checksums right, no environment (no password).
    incident = Path(outcome["incident_dir"])
    summary = json.loads((incident / "summary.json").read_text())
    app = [c for c in summary["containers"] if c["service"] == "app"][0]
    assert app["state"] == "exited" and app["exit_code"] == 137
    assert (incident / "logs" / ("%s-db-1.log" % stack.project)).stat().st_size > 0
    sums = dict(reversed(line.split("  ", 1)) for line in (incident / "SHA256SUMS").read_text().splitlines())
    assert set(sums) >= {"summary.json", "compose-ps.txt", "record.json"}
    for rel, digest in sums.items():
        assert hashlib.sha256((incident / rel).read_bytes()).hexdigest() == digest, rel
        assert stack.password not in (incident / rel).read_text(errors="replace"), rel

    audit = support.audit_lines(emergency.backup_root, stack.project)[-1]
    assert (audit["kind"], audit["action"], audit["result"], audit["reason"]) == ("emergency", "stop", "success", "test")
    assert audit["incident_dir"] == str(incident)

    # Zero acknowledged writes lost: start PostgreSQL again and look for every acknowledged row.
    stack.compose("up", "-d", "--wait", "db")
    acknowledged = len(writer.acknowledged)
    present = support.present_ids(emergency.connect, writer.acknowledged)
    print("emergency stop: %.1f s (grace %d + %d), acknowledged %d, present %d, lost %d"
          % (took, GRACE_S, DATA_GRACE_S, acknowledged, present, acknowledged - present))
    assert acknowledged > 50 and present == acknowledged


def test_a_stop_whose_diagnostics_cannot_be_written_still_stops_everything(emergency, tmp_path):
    """The diagnostics come first but never hold the stop up (a full disk is one reason to stop):
    with an incident folder that cannot be created, every service still stops, a paused one too,
    the data service last and cleanly, and the audit line says why there is no folder."""
    stack = emergency.stack
    stack.compose("up", "-d", "--wait")
    stack.container("static").pause()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the incident folders should go\n")
    run = ansible_run.run_playbook("emergency_stop", emergency.inventory,
                                   extra_vars={"lastgood_incident_root": str(blocker / "incidents")})
    assert run.rc == 0, failure(run)
    outcome = run.outcome()
    assert outcome["result"] == "success", outcome
    assert "diagnostics not written" in outcome["capture_error"] and outcome["incident_dir"] == ""
    assert sorted(outcome["stopped"]) == ["app", "db", "static"]
    assert all(state == "exited" for state in states(stack).values()), states(stack)
    assert outcome["clean_shutdown"] is True
    audit = support.audit_lines(emergency.backup_root, stack.project)[-1]
    assert (audit["kind"], audit["action"], audit["result"]) == ("emergency", "stop", "success")
    # The recovery tests below count the rows first.
    stack.compose("up", "-d", "--wait", "db")


def test_recover_in_check_mode_changes_nothing(emergency):
    stack = emergency.stack
    before = (states(stack), ansible_run.tree_state(emergency.backup_root), git_head(stack))
    run = ansible_run.run_playbook("emergency_recover", emergency.inventory, check=True)
    assert run.rc == 0, failure(run)
    assert run.outcome()["result"] == "planned"
    assert run.outcome()["snapshot_id"] == emergency.snapshots[-1]
    assert (states(stack), ansible_run.tree_state(emergency.backup_root), git_head(stack)) == before


def test_recover_passes_over_a_damaged_snapshot_and_restores_the_previous_one(emergency):
    stack = emergency.stack
    older, newest = emergency.snapshots
    damaged = support.damage_dump(emergency.backup_root, stack.project, newest)
    live_rows = support.count_rows(emergency.connect)
    run = ansible_run.run_playbook("emergency_recover", emergency.inventory, timeout=600)
    assert run.rc == 0, failure(run)
    outcome = run.outcome()
    assert outcome["result"] == "success" and outcome["healthy"] is True
    assert outcome["snapshot_id"] == older
    # The recovery's own outcome, nothing left from the rollback it ran (set_stats merges).
    assert outcome["tier"] == "emergency-recover" and "tier_requested" not in outcome, outcome
    skipped = {s["id"]: s["reason"] for s in outcome["skipped"]}
    assert newest in skipped and damaged in skipped[newest]
    window = outcome["data_loss"]
    assert window["databases"]["app"]["tables"]["public.writes"] == {
        "recorded": emergency.rows_at[older], "live": live_rows, "newer": live_rows - emergency.rows_at[older]}
    assert window["rows_newer"] == live_rows - emergency.rows_at[older]
    assert support.count_rows(emergency.connect) == emergency.rows_at[older]
    assert all(state == "running" for state in states(stack).values())
    audit = [line for line in support.audit_lines(emergency.backup_root, stack.project) if line["kind"] == "emergency"][-1]
    assert (audit["action"], audit["result"], audit["snapshot_id"]) == ("recover", "success", older)
    assert audit["data_loss"]["rows_newer"] == window["rows_newer"]


def test_without_a_verified_snapshot_the_code_falls_back_and_the_data_is_left_as_is(emergency):
    stack = emergency.stack
    older, newest = emergency.snapshots
    support.damage_dump(emergency.backup_root, stack.project, older)
    recorded_commit = json.loads((emergency.backup_root / stack.project / newest / "manifest.json").read_text())["git"]["commit"]
    # The full recovery before restored data only: the snapshots it rolled back to stay usable
    # (never marked bad), so the fallback is the commit the newest readable snapshot records.
    moved = commit_change(stack, "CHANGELOG.txt")
    assert moved != recorded_commit
    insert_rows(emergency.connect, 7)
    rows = support.count_rows(emergency.connect)
    run = ansible_run.run_playbook("emergency_recover", emergency.inventory, timeout=600)
    assert run.rc == 0, failure(run)
    outcome = run.outcome()
    assert outcome["snapshot_id"] == "" and outcome["data_left_as_is"] is True
    assert outcome["message"].startswith("no verified snapshot; code at %s, data left as is" % recorded_commit)
    fallback = outcome["fallback_commit"]
    assert fallback["commit"] == recorded_commit and fallback["source"] == "snapshot", fallback
    assert {newest, older} <= {s["id"] for s in outcome["skipped"]}
    assert git_head(stack) == recorded_commit
    assert support.count_rows(emergency.connect) == rows
    assert outcome["healthy"] is True
