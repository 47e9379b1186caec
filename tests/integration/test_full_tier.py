# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Escalation to the full tier, and a full tier killed half way then resumed.

A release ships a broken image and a bad migration (rows deleted). `auto` tries the image tier
first; the data gate (a PostgreSQL query) still fails, so the orchestrator escalates to the
full tier. The first run is killed right after the full tier's safety snapshot; the second
run resumes it without taking another one, restores the database and starts in stages.
"""

from __future__ import annotations

import json

import psycopg2
import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

ROWS = 500


def count_orders(connect, database="app"):
    with psycopg2.connect(dbname=database, **connect) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM orders")
        return cur.fetchone()[0]


@pytest.fixture(scope="module")
def full(module_stack, docker_client, tmp_path_factory):
    stack = module_stack()
    connect = stack.db_connect()
    with psycopg2.connect(dbname="app", **connect) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text)")
        cur.execute("INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, %s) g", (ROWS,))
    checks = ansible_run.stack_health_checks(stack) + [{
        "name": "orders", "type": "postgres", "port": stack.ports["db"], "password": stack.password,
        "database": "app", "query": "SELECT count(*) >= %d FROM orders" % ROWS}]
    with ansible_run.stack_host(stack, tmp_path_factory.mktemp("full"), docker_client, lastgood_health_checks=checks,
                                lastgood_gate_deadline_s=15,
                                lastgood_databases=[{"name": "app", "service": "db", "port": stack.ports["db"]}]) as found:
        found.connect = connect
        found.v1_id = docker_client.images.get(stacks.APP_V1).id
        found.v2_id = ansible_run.throwaway_image(docker_client, stacks.APP_V2, "lastgood-test/app", stack.project + "-v2",
                                                  stack.project)
        found.images.append(found.v2_id)
        snapshot = ansible_run.run_playbook("snapshot", found.inventory)
        assert snapshot.rc == 0, snapshot.describe()
        found.snapshot_id = snapshot.outcome()["snapshot_id"]
        # The bad release: a broken image and a migration that deleted most orders.
        stack.tag_app(found.v2_id)
        stack.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: stack.image_id("app") == found.v2_id, 30, message="app runs v2")
        with psycopg2.connect(dbname="app", **connect) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM orders WHERE id > 10")
        yield found


def safety_snapshots(found):
    found_ids = []
    for manifest in found.root.glob("*/manifest.json"):
        if "safety snapshot" in (json.loads(manifest.read_text()).get("reason") or ""):
            found_ids.append(manifest.parent.name)
    return sorted(found_ids)


def test_escalation_to_the_full_tier_resumes_after_a_kill_and_restores_the_data(full):
    assert count_orders(full.connect) == 10
    journal = full.root / "journal.json"
    interrupted = ansible_run.kill_at_journal_step(
        "rollback", full.inventory, journal, "attempt-2:full:safety_snapshot", status="done",
        extra_vars={"lastgood_confirm": True, "lastgood_reason": "release 2 lost orders"})
    # The image tier ran in the run's first module run and is journaled as a step of its own.
    assert [(s["step"], s["status"]) for s in interrupted["steps"]][:4] == [
        ("attempt-1", "started"), ("attempt-1:images", "done"), ("attempt-1", "done"), ("attempt-2", "started")]
    assert len(safety_snapshots(full)) == 1

    run = ansible_run.run_playbook("rollback", full.inventory, extra_vars={"lastgood_confirm": True}, timeout=600)
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["resumed"] is True and outcome["run_id"] == interrupted["run_id"]
    assert outcome["result"] == "success" and outcome["healthy"] is True
    assert outcome["planned_attempts"] == [["images"], ["full"]]
    assert "full" in outcome["tiers"]

    # The data is back, the state before it kept: the safety snapshot (marked bad, taken once)
    # and the replaced database.
    assert count_orders(full.connect) == ROWS
    safety = safety_snapshots(full)
    assert len(safety) == 1, "the resumed run took another safety snapshot"
    assert (full.root / safety[0] / "BAD").exists()
    with psycopg2.connect(dbname="postgres", **full.connect) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'app_before_%'")
        kept = [row[0] for row in cur.fetchall()]
    assert kept, "the replaced database was not kept"
    assert count_orders(full.connect, kept[0]) == 10
    assert full.stack.image_id("app") == full.v1_id

    line = [json.loads(x) for x in (full.root / "audit.jsonl").read_text().splitlines()][-1]
    assert line["run_id"] == interrupted["run_id"] and line["result"] == "success" and line["resumed"] == 1
    steps = json.loads((full.root / "runs" / line["run_id"] / "journal.json").read_text())["steps"]
    names = [s["step"] for s in steps]
    for expected in ("attempt-2:full:stop", "attempt-2:full:databases", "attempt-2:full:images",
                     "attempt-2:full:stage-1", "attempt-2:full:stage-2"):
        assert expected in names, names
    assert names.index("attempt-2:full:databases") < names.index("attempt-2:full:stage-2")
    assert not (full.root / "rollback.lock").exists()


def test_the_rollback_full_playbook_runs_the_tier_on_its_own(full, docker_client):
    """playbooks/rollback_full.yml: the role alone goes through the orchestrator with tier full."""
    full.stack.tag_app(full.v2_id)
    full.stack.compose("up", "-d", "--no-deps", "app")
    stacks.wait_until(lambda: full.stack.image_id("app") == full.v2_id, 30, message="app runs v2")
    with psycopg2.connect(dbname="app", **full.connect) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM orders WHERE id > 10")
    assert count_orders(full.connect) == 10

    run = ansible_run.run_playbook("rollback_full", full.inventory, extra_vars={"lastgood_confirm": True}, timeout=600)
    assert run.rc == 0, run.describe()
    assert count_orders(full.connect) == ROWS
    assert full.stack.image_id("app") == full.v1_id
    line = [json.loads(x) for x in (full.root / "audit.jsonl").read_text().splitlines()][-1]
    assert line["result"] == "success" and line["tiers"] == ["full"], line
    assert not (full.root / "rollback.lock").exists()


def test_the_full_tier_stops_the_services_running_now_not_the_snapshots(full):
    """A release renamed a service (static -> static2, on the same port). The stop step stops
    what runs now, static2 included, and does not ask compose for the static it no longer knows;
    the restored configuration brings static back and the renamed one is removed as an orphan."""
    compose_file = full.stack.dir / "compose.yaml"
    compose_file.write_text(compose_file.read_text().replace("\n  static:\n", "\n  static2:\n"))
    full.stack.compose("up", "-d", "--remove-orphans", "--wait", "static2")
    assert full.stack.container("static2").status == "running"

    run = ansible_run.run_playbook("rollback_full", full.inventory, extra_vars={"lastgood_confirm": True}, timeout=600)
    assert run.rc == 0, run.describe()
    line = [json.loads(x) for x in (full.root / "audit.jsonl").read_text().splitlines()][-1]
    assert line["result"] == "success", line
    steps = json.loads((full.root / "runs" / line["run_id"] / "journal.json").read_text())["steps"]
    stopped = [s["data"]["stopped"] for s in steps if s["step"].endswith(":stop") and s["status"] == "done"]
    assert stopped == [["app", "static2"]], steps
    assert full.stack.container("static").status == "running" and full.stack.health("static") == "healthy"
    with pytest.raises(LookupError):
        full.stack.container("static2")
    assert "static2" not in compose_file.read_text()
