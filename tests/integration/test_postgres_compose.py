"""postgres_dump and postgres_restore through a compose service: the demo stack's `db` service.

The tools run inside the PostgreSQL container (`docker compose exec -T`), connecting over its local
socket as the postgres user (peer authentication), or over 127.0.0.1 inside the container with the
password passed as `-e PGPASSWORD` (the name only). The tests look at the data from outside, with
psycopg2 over the stack's host-network port, independently of the modules.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid

import pytest

try:
    from . import ansible_run, pg_server
except ImportError:
    import ansible_run
    import pg_server

if str(pg_server.COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(pg_server.COLLECTIONS))

from ansible_collections.lastgood.rollback.plugins.module_utils import _postgres  # noqa: E402


class StackDb(pg_server.PgClient):
    def __init__(self, stack):
        super().__init__("127.0.0.1", stack.ports["db"], "postgres", stack.password)
        self.stack = stack

    def container_tmp(self):
        """Entries of /tmp inside the db container."""
        out = self.stack.compose("exec", "-T", "db", "ls", "-A", "/tmp").stdout
        return sorted(out.split())


@pytest.fixture(scope="module")
def db(module_stack):
    return StackDb(module_stack())


@pytest.fixture
def name(db):
    """A fresh database in the stack's server; it and its safety copies are dropped afterwards."""
    database = "c%s" % uuid.uuid4().hex[:8]
    db.sql("CREATE DATABASE %s" % database)
    db.sql("CREATE TABLE items (id serial PRIMARY KEY, label text, data jsonb);"
           "INSERT INTO items (label, data) SELECT 'item ' || g, jsonb_build_object('n', g) FROM generate_series(1, 3000) g;"
           "CREATE TABLE audit (at timestamptz DEFAULT now(), note text);"
           "INSERT INTO audit (note) SELECT md5(g::text) FROM generate_series(1, 500) g;"
           "CREATE INDEX ON audit (note)", dbname=database)
    yield database
    db.drop_databases(keep=lambda other: not (other.startswith(database) or other == _postgres.scratch_name(database)))


def conn(db, **extra):
    args = dict(project_dir=str(db.stack.dir), service="db", port=db.port)
    args.update(extra)
    return args


def dump(db, tmp_path, name, **extra):
    dest = str(tmp_path / ("%s.dump" % uuid.uuid4().hex[:6]))
    run = pg_server.run_module("postgres_dump", dict(conn(db), database=name, dest=dest, **extra))
    assert not run.failed, run.describe()
    return dest, run.result["dump"]


def restore(db, name, archive, recorded, snapshot_id="s1", check=False, **extra):
    args = dict(conn(db), database=name, archive=archive, recorded=recorded, snapshot_id=snapshot_id)
    args.update(extra)
    return pg_server.run_module("postgres_restore", args, check=check)


def change_data(db, name):
    db.sql("DELETE FROM items WHERE id % 2 = 0; CREATE TABLE later (x int)", dbname=name)


def assert_untouched(db, name, counts, before):
    assert db.table_counts(name) == counts
    assert db.answers(name)
    assert db.database_row(name)[0] is True
    assert db.databases() == before


def test_dump_streams_out_and_restore_streams_in(db, name, tmp_path):
    counts = db.table_counts(name)
    dest, recorded = dump(db, tmp_path, name)
    assert recorded["tables"] == {"public.items": 3000, "public.audit": 500}
    assert recorded["sha256"] == _postgres.sha256_file(dest)
    change_data(db, name)
    changed = db.table_counts(name)
    run = restore(db, name, dest, recorded)
    assert not run.failed, run.describe()
    assert db.table_counts(name) == counts
    assert db.table_counts(name + "_before_s1") == changed
    assert run.result["swap_window_s"] < 1
    assert _postgres.scratch_name(name) not in db.databases()
    assert run.result["space"]["checked"] is True and run.result["space"]["path"] == "/var/lib/postgresql/data/base"
    assert not [entry for entry in db.container_tmp() if entry.startswith("lastgood-")]


def test_directory_format_and_parallel_jobs_go_through_a_private_copy_in_the_container(db, name, tmp_path):
    counts = db.table_counts(name)
    dest = str(tmp_path / "dir")
    run = pg_server.run_module("postgres_dump", dict(conn(db), database=name, dest=dest, format="directory", jobs=2))
    assert not run.failed, run.describe()
    recorded = run.result["dump"]
    assert recorded["sha256"] == _postgres.directory_digest(dest)[0]
    assert "toc.dat" in os.listdir(dest)
    change_data(db, name)
    run = restore(db, name, dest, recorded, jobs=2)
    assert not run.failed, run.describe()
    assert db.table_counts(name) == counts
    # A custom-format archive restored with jobs=2 is copied in too (pg_restore -j cannot read a pipe).
    custom, custom_recorded = dump(db, tmp_path, name)
    run = restore(db, name, custom, custom_recorded, snapshot_id="s2", jobs=2)
    assert not run.failed, run.describe()
    assert not [entry for entry in db.container_tmp() if entry.startswith("lastgood-")]


def test_a_damaged_archive_is_refused_before_anything_changes(db, name, tmp_path):
    dest, recorded = dump(db, tmp_path, name)
    change_data(db, name)
    counts, before = db.table_counts(name), db.databases()
    pg_server.flip_byte(dest, os.path.getsize(dest) // 2)
    check = restore(db, name, dest, recorded, check=True)
    assert check.failed and "does not match its recorded sha256" in check.result["msg"]
    run = restore(db, name, dest, recorded)
    assert run.failed and run.result["msg"].startswith("refused before any change: archive")
    os.truncate(dest, os.path.getsize(dest) // 2)
    forged = dict(recorded, sha256=_postgres.sha256_file(dest))
    run = restore(db, name, dest, forged)
    assert run.failed and "cannot be read completely" in run.result["msg"], run.describe()
    assert_untouched(db, name, counts, before)


def test_an_sql_error_inside_the_archive_leaves_the_database_untouched(db, name, tmp_path):
    owner = name + "_owner"
    db.sql('CREATE ROLE "%s"' % owner)
    db.sql('ALTER TABLE audit OWNER TO "%s"' % owner, dbname=name)
    dest, recorded = dump(db, tmp_path, name)
    db.sql("ALTER TABLE audit OWNER TO postgres", dbname=name)
    db.sql('DROP ROLE "%s"' % owner)
    change_data(db, name)
    counts, before = db.table_counts(name), db.databases()
    run = restore(db, name, dest, recorded)
    assert run.failed
    assert run.result["msg"].startswith('restore failed, "%s" is untouched: pg_restore failed' % name), run.describe()
    assert 'role "%s" does not exist' % owner in run.result["msg"]
    assert run.result["cmd"][:2] == [run.result["cmd"][0], "compose"] and "exec" in run.result["cmd"]
    assert_untouched(db, name, counts, before)


def test_a_client_idling_in_a_transaction_is_terminated_at_the_swap(db, name, tmp_path):
    counts = db.table_counts(name)
    dest, recorded = dump(db, tmp_path, name)
    change_data(db, name)
    client = pg_server.psycopg2.connect(**db.dsn_params(name))
    with client.cursor() as cur:
        cur.execute("SELECT count(*) FROM items")
    run = restore(db, name, dest, recorded)
    assert not run.failed, run.describe()
    assert run.result["terminated_sessions"] >= 1
    assert run.result["swap_window_s"] < 0.5  # blocked, terminated, renamed: no waiting on the terminated session
    with pytest.raises(pg_server.psycopg2.OperationalError):
        with client.cursor() as cur:
            cur.execute("SELECT 1")
    client.close()
    assert db.table_counts(name) == counts


def test_the_password_goes_by_environment_name_only(db, name, tmp_path):
    """Over TCP inside the container (scram-sha-256), the password is needed and never on a command line."""
    db.sql("CREATE TABLE bulk AS SELECT g, repeat(md5(g::text), 4) AS body FROM generate_series(1, 150000) g",
           dbname=name)
    counts = db.table_counts(name)
    args = conn(db, host="127.0.0.1", password=db.password)
    with pg_server.CmdlineSampler(db.password) as sampler:
        dumped = pg_server.run_module("postgres_dump", dict(args, database=name, dest=str(tmp_path / "pw.dump")))
        assert not dumped.failed, dumped.describe()
        change_data(db, name)
        restored = pg_server.run_module("postgres_restore", dict(
            args, database=name, archive=str(tmp_path / "pw.dump"), recorded=dumped.result["dump"], snapshot_id="pw"))
    assert not restored.failed, restored.describe()
    assert db.table_counts(name) == counts
    assert sampler.seen == {"pg_dump", "pg_restore"}, sampler.seen  # it saw the programs inside the container too
    assert sampler.leaks == []
    execs = [argv for argv in sampler.argvs if "exec" in argv and "PGPASSWORD" in argv]
    assert execs, "no docker compose exec -e PGPASSWORD seen"
    assert all(argv[argv.index("PGPASSWORD") - 1] == "-e" for argv in execs)
    for run in (dumped, restored):
        assert db.password not in run.stdout + run.stderr

    wrong = pg_server.run_module("postgres_dump", dict(conn(db, host="127.0.0.1", password="not-it"), database=name,
                                                       dest=str(tmp_path / "wrong.dump")))
    assert wrong.failed
    assert "password authentication failed" in wrong.result["msg"] and "\n" not in wrong.result["msg"]
    assert "not-it" not in wrong.stdout


def test_pg_restore_killed_in_the_container_leaves_the_database_untouched(db, name, tmp_path):
    db.sql("CREATE TABLE bulk AS SELECT g, repeat(md5(g::text), 8) AS body FROM generate_series(1, 300000) g;"
           "CREATE INDEX ON bulk (body)", dbname=name)
    dest, recorded = dump(db, tmp_path, name, compress=1)
    change_data(db, name)
    counts, before = db.table_counts(name), db.databases()
    scratch = _postgres.scratch_name(name)
    running = pg_server.start_module("postgres_restore", dict(conn(db), database=name, archive=dest, recorded=recorded,
                                                              snapshot_id="k1"))
    try:
        victim = pg_server.wait_for_restore_copying(db, scratch)  # a process of the container, seen from the host
        os.kill(victim, signal.SIGKILL)
        run = running.wait(timeout=120)
    finally:
        running.kill_all()
    assert run.failed, run.describe()
    assert run.result["msg"].startswith('restore failed, "%s" is untouched: pg_restore failed (rc 137)' % name), \
        run.describe()
    assert_untouched(db, name, counts, before)
    rerun = restore(db, name, dest, recorded, snapshot_id="k1")
    assert not rerun.failed, rerun.describe()
    assert db.table_counts(name)[("public", "bulk")] == 300000


def test_unknown_service_and_unreachable_server_are_one_line_errors(db, name, tmp_path):
    run = pg_server.run_module("postgres_dump", dict(conn(db, service="nope"), database=name,
                                                     dest=str(tmp_path / "x.dump")))
    assert run.failed and run.result["msg"] == "service nope is not in compose project %s" % db.stack.project
    run = pg_server.run_module("postgres_dump", dict(conn(db, port=1), database=name, dest=str(tmp_path / "x.dump")))
    assert run.failed
    assert "cannot connect to postgres@service db" in run.result["msg"] and "\n" not in run.result["msg"]
    assert os.listdir(tmp_path) == []


def test_through_ansible_check_mode_plans_what_the_real_run_does(db, name, tmp_path):
    counts = db.table_counts(name)
    dest, recorded = dump(db, tmp_path, name)
    change_data(db, name)
    inventory = ansible_run.write_inventory(tmp_path, {})
    args = dict(conn(db), database=name, archive=dest, recorded=recorded, snapshot_id="a1")
    check = ansible_run.run_module(inventory, "postgres_restore", args, tmp_path, check=True)
    assert check.rc == 0, check.describe()
    planned = check.result()
    assert db.table_counts(name) != counts and name + "_before_a1" not in db.databases()
    real = ansible_run.run_module(inventory, "postgres_restore", args, tmp_path)
    assert real.rc == 0, real.describe()
    done = real.result()
    assert planned["plan"] == done["plan"] and planned["changed"] is done["changed"] is True
    assert planned["diff"] == done["diff"]
    assert db.table_counts(name) == counts
