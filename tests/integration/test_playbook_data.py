"""Data in snapshots, end to end through the playbooks, against the demo stack's real PostgreSQL.

snapshot.yml with lastgood_databases (compose-exec and direct access) -> rows deleted ->
verify.yml fails its data check -> restore_database.yml (clients stopped around the swap)
-> every row back, the previous database kept as <name>_before_<id> -> verify.yml passes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg2
import pytest

import ansible_run

ROWS = 500


@pytest.fixture(scope="module")
def data(module_stack, docker_client, tmp_path_factory):
    stack = module_stack()
    connect = stack.db_connect()
    with psycopg2.connect(dbname="app", **connect) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id serial PRIMARY KEY, body jsonb NOT NULL, note text)")
        cur.execute("INSERT INTO orders (body, note) SELECT jsonb_build_object('n', g), repeat('x', g %% 50) "
                    "FROM generate_series(1, %s) g", (ROWS,))
        cur.execute("CREATE INDEX ON orders ((body->>'n'))")
    entry = {"name": "app", "service": "db", "port": stack.ports["db"]}
    with ansible_run.stack_host(stack, tmp_path_factory.mktemp("data"), docker_client,
                                lastgood_databases=[entry]) as found:
        found.connect = connect
        yield found


def count(data, database="app"):
    with psycopg2.connect(dbname=database, **data.connect) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM orders")
        return cur.fetchone()[0]


def databases(data):
    with psycopg2.connect(dbname="postgres", **data.connect) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database ORDER BY 1")
        return [row[0] for row in cur.fetchall()]


def test_snapshot_dumps_the_database_with_checksum_and_row_counts(data):
    run = ansible_run.run_playbook("snapshot", data.inventory)
    assert run.rc == 0, run.describe()
    snapshot_id = run.outcome()["snapshot_id"]
    manifest = ansible_run.read_manifest(data.backup_root, data.stack.project, snapshot_id)
    entry = manifest["databases"]["app"]
    dump = Path(data.backup_root) / data.stack.project / snapshot_id / entry["file"]
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == entry["sha256"]
    assert entry["size"] == dump.stat().st_size
    assert entry["tables"] == {"public.orders": ROWS}
    assert entry["server_version"].startswith("15")
    assert entry["access"] == {"service": "db", "port": data.stack.ports["db"], "user": "postgres"}
    assert ansible_run.last_known_good(data.backup_root, data.stack.project) == snapshot_id
    data.snapshot_id = snapshot_id


def test_verify_fails_when_rows_were_lost(data):
    with psycopg2.connect(dbname="app", **data.connect) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM orders WHERE id > 100")
    run = ansible_run.run_playbook("verify", data.inventory)
    assert run.rc == 2, run.describe()
    assert "public.orders has 100 rows" in run.failure_msg(), run.failure_msg()
    assert run.outcome()["result"] == "failed"


def test_restore_database_check_mode_changes_nothing(data):
    before = (count(data), databases(data))
    app_id = data.stack.container_id("app")
    run = ansible_run.run_playbook("restore_database", data.inventory, check=True,
                                   extra_vars={"lastgood_database_clients": ["app"]})
    assert run.rc == 0, run.describe()
    assert "stop app just before the swap and start them right after" in run.stdout, run.describe()
    assert data.stack.container_id("app") == app_id and data.stack.container("app").status == "running"
    assert (count(data), databases(data)) == before


def test_restore_database_is_refused_while_another_run_holds_the_lock(data):
    before = (count(data), databases(data))
    with ansible_run.OtherRunLock(data.backup_root, data.stack.project) as other:
        run = ansible_run.run_playbook("restore_database", data.inventory)
        assert run.rc != 0, run.describe()
        assert other.refused(run.failure_msg(), data.stack.project), run.describe()
    (other.root / "rollback.lock").unlink()
    assert (count(data), databases(data)) == before


def test_restore_database_brings_every_row_back_and_keeps_the_previous_copy(data):
    app_started = data.stack.container("app").attrs["State"]["StartedAt"]
    static_id = data.stack.container_id("static")
    run = ansible_run.run_playbook("restore_database", data.inventory,
                                   extra_vars={"lastgood_database_clients": ["app"]})
    assert run.rc == 0, run.describe()
    assert count(data) == ROWS
    kept = "app_before_%s" % data.snapshot_id
    assert kept in databases(data)
    assert count(data, kept) == 100  # the database as it was before the restore
    assert not [name for name in databases(data) if name.startswith("lastgood_restore_")]
    # The client was stopped around the swap and runs again; other services were not touched.
    assert data.stack.container("app").attrs["State"]["StartedAt"] != app_started
    assert data.stack.container("app").attrs["State"]["Running"]
    assert data.stack.container_id("static") == static_id
    outcome = run.outcome()
    assert outcome["result"] == "success" and outcome["tier"] == "database"
    assert outcome["services_changed"] == ["app"]


def test_verify_passes_after_the_restore(data):
    run = ansible_run.run_playbook("verify", data.inventory)
    assert run.rc == 0, run.describe()
    assert run.outcome()["data"]["databases"]["app"]["ok"] is True


def test_a_paused_client_stays_paused_and_is_not_reported_as_changed(data):
    """An operator who paused a client froze it on purpose: the restore neither stops nor starts it."""
    with psycopg2.connect(dbname="app", **data.connect) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM orders WHERE id > 200")
    app = data.stack.container("app")
    started = app.attrs["State"]["StartedAt"]
    app.pause()
    try:
        plan = ansible_run.run_playbook("restore_database", data.inventory, check=True,
                                        extra_vars={"lastgood_database_clients": ["app"]})
        assert plan.rc == 0, plan.describe()
        assert "no client to stop: none of app is running" in plan.stdout, plan.describe()
        run = ansible_run.run_playbook("restore_database", data.inventory,
                                       extra_vars={"lastgood_database_clients": ["app"]})
        assert run.rc == 0, run.describe()
        assert count(data) == ROWS
        app.reload()
        assert app.status == "paused" and app.attrs["State"]["StartedAt"] == started
        assert run.outcome()["services_changed"] == []
    finally:
        app.reload()
        if app.status == "paused":
            app.unpause()


def test_unknown_database_is_refused_before_any_change(data):
    before = (count(data), databases(data))
    run = ansible_run.run_playbook("restore_database", data.inventory,
                                   extra_vars={"lastgood_restore_databases": ["nope"]})
    assert run.rc == 2
    assert "asked for [nope]" in run.failure_msg()
    assert (count(data), databases(data)) == before


def test_direct_access_keeps_the_password_out_of_output_and_manifest(data):
    entry = {"name": "app", "host": "127.0.0.1", "port": data.stack.ports["db"], "user": "postgres",
             "password": data.stack.password}
    run = ansible_run.run_playbook("snapshot", data.inventory, extra_vars={"lastgood_databases": [entry]})
    assert run.rc == 0, run.describe()
    assert data.stack.password not in run.stdout + run.stderr
    snapshot_id = run.outcome()["snapshot_id"]
    manifest_text = (Path(data.backup_root) / data.stack.project / snapshot_id / "manifest.json").read_text()
    assert data.stack.password not in manifest_text
    assert json.loads(manifest_text)["databases"]["app"]["access"] == {
        "host": "127.0.0.1", "port": data.stack.ports["db"], "user": "postgres"}
