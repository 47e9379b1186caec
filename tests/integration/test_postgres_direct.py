"""postgres_dump and postgres_restore in direct mode, against a private PostgreSQL 15 server on the host.

Every fault of the issue is produced for real (a changed byte, a truncated dump, an SQL error inside
the archive, a disk that fills up, pg_restore or the whole module killed, a client idling in a
transaction) and every test proves what happened to the data: the row counts of the live database
before and after, that it still answers queries, and that no scratch database is left behind.

The modules run as Ansible runs them on a host (pg_server.run_module); the password test also runs
them through ansible-playbook -vvv.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import psycopg2
import pytest

try:
    from . import ansible_run, pg_server
except ImportError:
    import ansible_run
    import pg_server

if str(pg_server.COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(pg_server.COLLECTIONS))

from ansible_collections.lastgood.rollback.plugins.module_utils import _postgres  # noqa: E402


@pytest.fixture(scope="module")
def server():
    # fsync off: these tests prove behaviour, not durability, and run faster without it.
    with pg_server.PgServer.started(settings={"fsync": "off", "synchronous_commit": "off"}) as srv:
        yield srv


@pytest.fixture
def names(server):
    """Unique database names for one test; every database whose name starts with one is dropped after it."""
    prefix = "t%s" % uuid.uuid4().hex[:8]
    yield prefix
    for name in server.databases():
        if name.startswith(prefix) or name == _postgres.scratch_name(prefix):
            server.sql('DROP DATABASE "%s" WITH (FORCE)' % name.replace('"', '""'))


def conn(server, **extra):
    args = dict(host="127.0.0.1", port=server.port, user=server.user, password=server.password)
    args.update(extra)
    return args


def make_shop(server, name, customers=2000):
    """A database with text and jsonb data, an index, a view, a sequence and awkward schema/table names."""
    server.sql('CREATE DATABASE "%s"' % name.replace('"', '""'))
    db = server.connect(name)
    with db.cursor() as cur:
        cur.execute('''
            CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, profile jsonb);
            INSERT INTO customers (name, profile)
              SELECT 'customer ' || g, jsonb_build_object('tier', g %% 5, 'tags', jsonb_build_array(md5(g::text)))
              FROM generate_series(1, %(n)s) g;
            CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                                 total numeric(10,2), note text);
            INSERT INTO orders (customer_id, total, note)
              SELECT 1 + g %% %(n)s, g / 100.0, repeat(md5(g::text), 3) FROM generate_series(1, %(n)s * 2) g;
            CREATE INDEX ON orders (customer_id);
            CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 10;
            CREATE SCHEMA "Sales Data";
            CREATE TABLE "Sales Data"."Q1 ""totals""" (region text, amount int);
            INSERT INTO "Sales Data"."Q1 ""totals""" VALUES ('north', 1), ('south', 2), ('east', 3);
            CREATE TABLE empty_table (id int);
            CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
            CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
            CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            INSERT INTO events SELECT g, date '2025-12-01' + g %% 61 FROM generate_series(1, 610) g;
            CREATE MATERIALIZED VIEW customer_totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY 1;
        ''', {"n": customers})
    db.close()
    return server.table_counts(name)


def dump(server, tmp_path, name, **extra):
    dest = str(tmp_path / ("%s.dump" % uuid.uuid4().hex[:6]))
    run = pg_server.run_module("postgres_dump", dict(conn(server), database=name, dest=dest, **extra))
    assert not run.failed, run.describe()
    return dest, run.result["dump"]


def dump_alongside(server, tmp_path, name, work):
    """dump() while `work(stop)` runs in a thread; `stop` (an Event) is set when the dump has ended."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,), daemon=True)
    thread.start()
    try:
        return dump(server, tmp_path, name)
    finally:
        stop.set()
        thread.join()


def restore(server, name, archive, recorded, snapshot_id="s1", check=False, **extra):
    return pg_server.run_module("postgres_restore", dict(conn(server), database=name, archive=archive, recorded=recorded,
                                                         snapshot_id=snapshot_id, **extra), check=check)


def assert_untouched(server, name, counts, before_databases):
    """The live database kept every row, answers, accepts connections, and nothing was left behind."""
    assert server.table_counts(name) == counts
    assert server.answers(name)
    assert server.database_row(name)[0] is True
    assert server.databases() == before_databases


def change_data(server, name):
    db = server.connect(name)
    with db.cursor() as cur:
        cur.execute("DELETE FROM orders WHERE id % 3 = 0; CREATE TABLE added_later (x int); "
                    "INSERT INTO customers (name) VALUES ('after the dump')")
    db.close()


# -- dump -------------------------------------------------------------------------------------------

def test_dump_records_checksum_size_version_and_row_counts(server, names, tmp_path):
    counts = make_shop(server, names)
    dest, recorded = dump(server, tmp_path, names)
    assert recorded["sha256"] == _postgres.sha256_file(dest)
    assert recorded["size"] == os.path.getsize(dest)
    assert recorded["file"] == os.path.basename(dest)
    assert recorded["format"] == "custom"
    assert recorded["server_version"].startswith("15.")
    assert recorded["database_size"] > 0
    # Leaf tables only (a partitioned table holds no rows of its own); December 2025 is 31 of the 61 days.
    assert recorded["tables"] == {"public.customers": 2000, "public.orders": 4000, "public.empty_table": 0,
                                  '"Sales Data"."Q1 ""totals"""': 3, "public.events_2025": 310, "public.events_2026": 300}
    assert sum(rows for key, rows in counts.items() if key != ("public", "events")) == sum(recorded["tables"].values())
    assert os.stat(dest).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(dest)]  # no partial file left


def test_dump_counts_are_those_of_the_dump_while_writes_go_on(server, names, tmp_path):
    """Rows inserted during the dump are in neither the dump nor the counts: the restore verifies."""
    make_shop(server, names, customers=60000)
    inserted = []

    def writer(stop):
        db = server.connect(names)
        with db.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO customers (name) SELECT 'during' FROM generate_series(1, 50)")
                inserted.append(50)
        db.close()

    dest, recorded = dump_alongside(server, tmp_path, names, writer)
    assert inserted, "the writer did not run during the dump"
    assert recorded["tables"]["public.customers"] < server.table_counts(names)[("public", "customers")]
    run = restore(server, names, dest, recorded)
    assert not run.failed, run.describe()
    assert server.table_counts(names)[("public", "customers")] == recorded["tables"]["public.customers"]


def test_dump_refuses_to_replace_a_dump_unless_told(server, names, tmp_path):
    make_shop(server, names, customers=10)
    dest, recorded = dump(server, tmp_path, names)
    run = pg_server.run_module("postgres_dump", dict(conn(server), database=names, dest=dest))
    assert run.failed and "exists already" in run.result["msg"]
    assert _postgres.sha256_file(dest) == recorded["sha256"]
    run = pg_server.run_module("postgres_dump", dict(conn(server), database=names, dest=dest, overwrite=True, compress=0))
    assert not run.failed, run.describe()
    assert run.result["dump"]["sha256"] == _postgres.sha256_file(dest) != recorded["sha256"]


def test_dump_check_mode_writes_nothing(server, names, tmp_path):
    make_shop(server, names, customers=10)
    server.sql("ANALYZE", dbname=names)
    dest = str(tmp_path / "x.dump")
    run = pg_server.run_module("postgres_dump", dict(conn(server), database=names, dest=dest), check=True)
    assert not run.failed, run.describe()
    assert run.result["changed"] is True
    assert run.result["dump"]["estimated_tables"]["public.orders"] == 20
    assert "sha256" not in run.result["dump"]
    assert os.listdir(tmp_path) == []


def test_directory_format_parallel_dump_and_restore(server, names, tmp_path):
    counts = make_shop(server, names)
    dest = str(tmp_path / "shop.dir")
    run = pg_server.run_module("postgres_dump", dict(conn(server), database=names, dest=dest, format="directory", jobs=2))
    assert not run.failed, run.describe()
    recorded = run.result["dump"]
    assert os.path.isdir(dest) and recorded["format"] == "directory"
    assert recorded["sha256"] == _postgres.directory_digest(dest)[0]
    change_data(server, names)
    run = restore(server, names, dest, recorded, jobs=2)
    assert not run.failed, run.describe()
    assert server.table_counts(names) == counts


def test_parallel_dump_needs_the_directory_format(server, names, tmp_path):
    make_shop(server, names, customers=10)
    run = pg_server.run_module("postgres_dump", dict(conn(server), database=names, dest=str(tmp_path / "x"), jobs=2))
    assert run.failed and run.result["msg"] == "parallel dumps (jobs > 1) need format=directory"


# -- restore ------------------------------------------------------------------------------------------

def test_restore_swaps_in_the_dump_and_keeps_the_previous_database(server, names, tmp_path):
    counts = make_shop(server, names)
    role = names + "_app"
    server.sql('CREATE ROLE "%s" LOGIN' % role)
    server.sql('REVOKE ALL ON DATABASE "%s" FROM PUBLIC' % names)
    server.sql('GRANT CONNECT, TEMPORARY ON DATABASE "%s" TO "%s"' % (names, role))
    server.sql('ALTER DATABASE "%s" SET search_path TO "$user", public, "Sales Data"' % names)
    server.sql('ALTER ROLE "%s" IN DATABASE "%s" SET work_mem TO \'8MB\'' % (role, names))
    server.sql('COMMENT ON DATABASE "%s" IS %%s' % names, ("the shop, it's ours",))
    settings_query = ("SELECT coalesce(r.rolname, ''), s.setconfig::text FROM pg_db_role_setting s "
                      "JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole "
                      "WHERE d.datname = %s ORDER BY 1")
    settings_before = server.sql(settings_query, (names,))
    acl_before = server.database_row(names)[1]
    dest, recorded = dump(server, tmp_path, names)
    change_data(server, names)
    changed_counts = server.table_counts(names)

    run = restore(server, names, dest, recorded, snapshot_id="20261130T084512Z")
    assert not run.failed, run.describe()
    result = run.result
    keep = names + "_before_20261130T084512Z"
    assert result["changed"] is True
    assert result["safety_copy"] == keep
    assert server.table_counts(names) == counts
    assert server.table_counts(keep) == changed_counts
    assert result["tables"] == recorded["tables"]
    assert 0 <= result["swap_window_s"] < 1
    assert _postgres.scratch_name(names) not in server.databases()
    # The restored database was analyzed before it went live, and has the live one's properties.
    analyzed = server.sql("SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables "
                          "WHERE last_analyze IS NOT NULL", dbname=names)
    assert set(recorded["tables"]) | {"public.customer_totals"} <= set(row[0] for row in analyzed)
    assert server.sql("SELECT count(*) FROM pg_stats WHERE tablename = 'events'", dbname=names)[0][0] == 2
    assert server.database_row(names) == (True, acl_before)
    assert server.sql(settings_query, (names,)) == settings_before
    assert server.sql("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                      (names,)) == [("the shop, it's ours",)]
    assert server.database_row(keep)[0] is True
    assert [a.split(":")[0] for a in result["actions"]][-1].startswith("swapped")
    assert "public.orders: %d rows" % recorded["tables"]["public.orders"] in result["diff"]["after"]


def test_check_mode_prints_the_plan_verifies_and_changes_nothing(server, names, tmp_path):
    make_shop(server, names)
    dest, recorded = dump(server, tmp_path, names)
    change_data(server, names)
    counts, before = server.table_counts(names), server.databases()
    run = restore(server, names, dest, recorded, check=True, jobs=2)
    assert not run.failed, run.describe()
    plan = run.result["plan"]
    assert run.result["changed"] is True
    assert plan[0].startswith("verify the sha256 of %s" % dest)
    assert "pg_restore -f /dev/null" in plan[1]
    assert any(step.startswith("room for a second copy") for step in plan)
    assert any("--exit-on-error --jobs=2" in step for step in plan)
    assert plan[-1] == 'keep "%s_before_s1" as the safety copy until it is dropped' % names
    assert run.result["actions"] == ["verified archive %s: sha256 matches, read completely" % dest]
    assert run.result["archive"]["sha256"] == recorded["sha256"]
    assert_untouched(server, names, counts, before)


def test_check_mode_refuses_a_damaged_archive_too(server, names, tmp_path):
    make_shop(server, names, customers=100)
    dest, recorded = dump(server, tmp_path, names)
    pg_server.flip_byte(dest, os.path.getsize(dest) // 2)
    run = restore(server, names, dest, recorded, check=True)
    assert run.failed and "does not match its recorded sha256" in run.result["msg"]


def test_one_changed_byte_is_refused_before_anything_changes(server, names, tmp_path):
    make_shop(server, names)
    dest, recorded = dump(server, tmp_path, names, compress=0)  # uncompressed: only the checksum sees a changed digit
    change_data(server, names)
    counts, before = server.table_counts(names), server.databases()
    pg_server.flip_byte(dest, os.path.getsize(dest) // 2)
    run = restore(server, names, dest, recorded)
    assert run.failed
    assert run.result["msg"].startswith("refused before any change: archive %s does not match its recorded sha256" % dest)
    assert "\n" not in run.result["msg"]
    assert run.result["actions"] == []
    assert_untouched(server, names, counts, before)


def test_a_truncated_dump_is_refused_before_anything_changes(server, names, tmp_path):
    make_shop(server, names)
    dest, recorded = dump(server, tmp_path, names)
    counts, before = server.table_counts(names), server.databases()
    os.truncate(dest, os.path.getsize(dest) * 2 // 3)
    run = restore(server, names, dest, recorded)
    assert run.failed and "does not match its recorded sha256" in run.result["msg"]
    assert_untouched(server, names, counts, before)
    # Even with a record that matches the truncated file, the full read refuses it.
    forged = dict(recorded, sha256=_postgres.sha256_file(dest))
    for jobs in (1, 2):  # one pg_restore reading everything, or two reading half of the entries each
        run = restore(server, names, dest, forged, jobs=jobs)
        assert run.failed
        assert "cannot be read completely: pg_restore (full read) failed" in run.result["msg"], run.describe()
        assert run.result["rc"] == 1 and "pg_restore" in run.result["cmd"][0]
        assert ("--use-list" in " ".join(run.result["cmd"])) is (jobs == 2)
        assert_untouched(server, names, counts, before)


def test_an_sql_error_inside_the_archive_leaves_the_database_untouched(server, names, tmp_path):
    original = make_shop(server, names)
    owner = names + "_owner"
    server.sql('CREATE ROLE "%s"' % owner)
    server.sql('ALTER TABLE orders OWNER TO "%s"' % owner, dbname=names)
    dest, recorded = dump(server, tmp_path, names)
    # The archive now refers to a role that no longer exists: ALTER TABLE ... OWNER TO fails on restore.
    server.sql('ALTER TABLE orders OWNER TO postgres', dbname=names)
    server.sql('DROP ROLE "%s"' % owner)
    change_data(server, names)
    counts, before = server.table_counts(names), server.databases()
    run = restore(server, names, dest, recorded)
    assert run.failed
    assert run.result["msg"].startswith('restore failed, "%s" is untouched: pg_restore failed (rc 1)' % names), run.describe()
    assert 'role "%s" does not exist' % owner in run.result["stderr"]
    assert run.result["cmd"][-1] == dest and "--exit-on-error" in run.result["cmd"]
    assert_untouched(server, names, counts, before)
    # Once the role exists again, the same archive restores.
    server.sql('CREATE ROLE "%s"' % owner)
    run = restore(server, names, dest, recorded)
    assert not run.failed, run.describe()
    assert server.table_counts(names) == original
    for database in (names, names + "_before_s1"):
        server.sql('DROP DATABASE "%s"' % database)
    server.sql('DROP ROLE "%s"' % owner)


def test_a_client_idling_in_a_transaction_is_terminated_at_the_swap(server, names, tmp_path):
    counts = make_shop(server, names)
    dest, recorded = dump(server, tmp_path, names)
    change_data(server, names)
    client = psycopg2.connect(**server.dsn_params(names))
    with client.cursor() as cur:
        cur.execute("SELECT count(*) FROM customers")  # the transaction stays open, idle
    run = restore(server, names, dest, recorded)
    assert not run.failed, run.describe()
    assert run.result["terminated_sessions"] >= 1
    assert run.result["swap_window_s"] < 0.5  # blocked, terminated, renamed: no waiting on the terminated session
    with pytest.raises(psycopg2.OperationalError):
        with client.cursor() as cur:
            cur.execute("SELECT 1")
    client.close()
    assert server.table_counts(names) == counts


def test_names_with_quotes_spaces_semicolons_and_dots_are_identifiers(server, tmp_path):
    name = 'we"ird; DROP DATABASE postgres; --..x \'q'
    try:
        counts = make_shop(server, name, customers=50)
        dest, recorded = dump(server, tmp_path, name)
        change_data(server, name)
        run = restore(server, name, dest, recorded, snapshot_id="s.1-a_b")
        assert not run.failed, run.describe()
        assert server.table_counts(name) == counts
        assert run.result["safety_copy"] == name + "_before_s.1-a_b"
        assert "postgres" in server.databases()
    finally:
        for existing in server.databases():
            if existing.startswith(name) or existing == _postgres.scratch_name(name):
                server.sql('DROP DATABASE "%s" WITH (FORCE)' % existing.replace('"', '""'))


@pytest.mark.parametrize("name, reason", [("x" * 64, "longer than 63 bytes"), ("a\x00b", "NUL character")])
def test_impossible_names_are_refused_with_one_line(server, tmp_path, name, reason):
    run = pg_server.run_module("postgres_dump", dict(conn(server), database=name, dest=str(tmp_path / "x.dump")))
    assert run.failed and reason in run.result["msg"], run.describe()


def test_an_unsafe_snapshot_id_is_refused(server, names, tmp_path):
    make_shop(server, names, customers=10)
    dest, recorded = dump(server, tmp_path, names)
    run = restore(server, names, dest, recorded, snapshot_id="../x")
    assert run.failed and "not a safe name" in run.result["msg"]


# -- clear errors before any change ------------------------------------------------------------------

def test_wrong_password_unreachable_server_and_missing_archive(server, names, tmp_path):
    make_shop(server, names, customers=10)
    dest, recorded = dump(server, tmp_path, names)
    counts, before = server.table_counts(names), server.databases()

    wrong = pg_server.run_module("postgres_restore", dict(conn(server, password="not-the-password"), database=names,
                                                          archive=dest, recorded=recorded, snapshot_id="s1"))
    assert wrong.failed
    assert re.match(r'^refused before any change: cannot connect to postgres@127\.0\.0\.1:\d+ database "postgres": '
                    r'.*password authentication failed for user "postgres"$', wrong.result["msg"]), wrong.describe()
    assert "not-the-password" not in wrong.stdout

    unreachable = pg_server.run_module("postgres_restore", dict(conn(server, port=pg_server.stacks.free_port()),
                                                                database=names, archive=dest, recorded=recorded,
                                                                snapshot_id="s1", connect_timeout=3))
    assert unreachable.failed and "cannot connect to" in unreachable.result["msg"]
    assert "Connection refused" in unreachable.result["msg"] and "\n" not in unreachable.result["msg"]

    missing = restore(server, names, str(tmp_path / "nope.dump"), recorded)
    assert missing.failed
    assert missing.result["msg"] == "refused before any change: archive %s does not exist or is not a file" % (
        tmp_path / "nope.dump")

    dump_wrong = pg_server.run_module("postgres_dump", dict(conn(server, password="nope"), database=names,
                                                            dest=str(tmp_path / "y.dump")))
    assert dump_wrong.failed and "password authentication failed" in dump_wrong.result["msg"]
    assert not (tmp_path / "y.dump").exists()
    assert_untouched(server, names, counts, before)


def test_a_second_restore_of_the_same_database_is_refused_while_one_runs(server, names, tmp_path):
    make_shop(server, names, customers=10)
    dest, recorded = dump(server, tmp_path, names)
    counts, before = server.table_counts(names), server.databases()
    holder = server.connect("postgres")
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_postgres.advisory_key(names),))
    try:
        run = restore(server, names, dest, recorded)
    finally:
        holder.close()
    assert run.failed and run.result["msg"] == 'refused before any change: another restore of database "%s" is running' % names
    assert_untouched(server, names, counts, before)


# -- processes killed halfway ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bulk(server, tmp_path_factory):
    """A database whose restore takes a couple of seconds, and its dump (shared by the kill tests)."""
    name = "bulk_%s" % uuid.uuid4().hex[:6]
    server.sql("CREATE DATABASE %s" % name)
    server.sql("CREATE TABLE rows_a AS SELECT g AS id, repeat(md5(g::text), 8) AS body FROM generate_series(1, 400000) g;"
               "CREATE TABLE rows_b AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 400000) g;"
               "CREATE INDEX ON rows_a (body); CREATE INDEX ON rows_b (body)", dbname=name)
    dest, recorded = dump(server, tmp_path_factory.mktemp("bulk"), name, compress=1)
    yield name, dest, recorded
    for existing in server.databases():
        if existing.startswith(name) or existing == _postgres.scratch_name(name):
            server.sql('DROP DATABASE "%s" WITH (FORCE)' % existing)


def test_pg_restore_killed_halfway_leaves_the_database_untouched_and_a_rerun_completes(server, bulk):
    name, dest, recorded = bulk
    server.sql("DELETE FROM rows_a WHERE id <= 1000", dbname=name)
    counts, before = server.table_counts(name), server.databases()
    scratch = _postgres.scratch_name(name)
    running = pg_server.start_module("postgres_restore", dict(conn(server), database=name, archive=dest,
                                                              recorded=recorded, snapshot_id="k1", jobs=2))
    try:
        victim = pg_server.wait_for_restore_copying(server, scratch)
        os.kill(victim, signal.SIGKILL)
        run = running.wait(timeout=120)
    finally:
        running.kill_all()
    assert run.failed, run.describe()
    assert run.result["msg"] == 'restore failed, "%s" is untouched: pg_restore was killed by signal 9' % name, \
        run.describe()
    assert_untouched(server, name, counts, before)

    rerun = restore(server, name, dest, recorded, snapshot_id="k1", jobs=2)
    assert not rerun.failed, rerun.describe()
    assert server.table_counts(name)[("public", "rows_a")] == 400000
    assert server.table_counts(name + "_before_k1") == counts
    server.sql('DROP DATABASE "%s_before_k1"' % name)


def test_the_module_killed_halfway_leaves_a_scratch_database_that_the_rerun_drops(server, bulk):
    name, dest, recorded = bulk
    server.sql("DELETE FROM rows_b WHERE id <= 500", dbname=name)
    counts, before = server.table_counts(name), server.databases()
    scratch = _postgres.scratch_name(name)
    running = pg_server.start_module("postgres_restore", dict(conn(server), database=name, archive=dest,
                                                              recorded=recorded, snapshot_id="k2"))
    pg_server.wait_for_restore_copying(server, scratch)
    running.kill_all()  # the module and its pg_restore: nothing gets to clean up
    running.wait(timeout=30)
    assert running.rc == -signal.SIGKILL
    assert scratch in server.databases(), "the kill should have left the scratch database behind"
    assert server.table_counts(name) == counts
    assert server.answers(name)

    rerun = restore(server, name, dest, recorded, snapshot_id="k2")
    assert not rerun.failed, rerun.describe()
    assert rerun.result["leftovers_dropped"] == [scratch]
    assert rerun.result["plan"][3].startswith("drop the leftover scratch database %s" % scratch)
    assert server.table_counts(name)[("public", "rows_b")] == 400000
    assert sorted(server.databases()) == sorted(before + [name + "_before_k2"])
    server.sql('DROP DATABASE "%s_before_k2"' % name)


def test_a_failed_swap_lets_the_database_accept_connections_again(server, bulk):
    """Someone takes the safety copy's name while the restore runs: the rename fails after new
    connections were blocked; the live database must accept them again, untouched."""
    name, dest, recorded = bulk
    server.sql("DELETE FROM rows_a WHERE id <= 10", dbname=name)
    counts = server.table_counts(name)
    taken = name + "_before_race"
    running = pg_server.start_module("postgres_restore", dict(conn(server), database=name, archive=dest,
                                                              recorded=recorded, snapshot_id="race"))
    try:
        pg_server.wait_for_restore_copying(server, _postgres.scratch_name(name))
        server.sql('CREATE DATABASE "%s"' % taken)
        run = running.wait(timeout=120)
    finally:
        running.kill_all()
    try:
        assert run.failed, run.describe()
        assert run.result["msg"] == 'restore failed, "%s" is untouched: ERROR: database "%s" already exists' % (
            name, taken), run.describe()
        assert server.table_counts(name) == counts
        assert server.database_row(name)[0] is True and server.answers(name)
        assert _postgres.scratch_name(name) not in server.databases()
    finally:
        server.sql('DROP DATABASE "%s"' % taken)


def test_a_run_killed_during_the_swap_is_repaired_by_the_rerun(server, names, tmp_path):
    """Killed after blocking connections, before the renames: the rerun lets the database accept connections again."""
    counts = make_shop(server, names, customers=100)
    dest, recorded = dump(server, tmp_path, names)
    scratch = _postgres.scratch_name(names)
    # The state such a kill leaves: the scratch database with its marker, the live one blocked.
    server.sql('CREATE DATABASE "%s"' % scratch)
    server.sql("COMMENT ON DATABASE \"%s\" IS %%s" % scratch, (_postgres.scratch_marker(names, "s1", True),))
    server.sql('ALTER DATABASE "%s" ALLOW_CONNECTIONS false' % names)
    with pytest.raises(psycopg2.OperationalError, match="not currently accepting connections"):
        server.connect(names)
    check = restore(server, names, dest, recorded, check=True)
    assert not check.failed, check.describe()
    assert any("let \"%s\" accept connections again" % names in step for step in check.result["plan"])
    assert server.database_row(names)[0] is False and scratch in server.databases()  # check mode changed nothing
    run = restore(server, names, dest, recorded)
    assert not run.failed, run.describe()
    assert run.result["leftovers_dropped"] == [scratch]
    assert server.table_counts(names) == counts
    assert server.database_row(names)[0] is True
    assert server.database_row(names + "_before_s1")[0] is True


# -- disk space --------------------------------------------------------------------------------------

FILL_ROWS = 200000  # about 21 MB of table


@pytest.fixture
def tiny_tablespace(server, names):
    """A tablespace on a 32 MiB tmpfs holding a database of about 23 MB on disk: it fits once, not twice.

    Real disk-full conditions: the server's data files for the tablespace live on that tmpfs, so
    PostgreSQL itself hits ENOSPC; the WAL stays on the main disk, so the server never stops.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = server.base / ("tiny-" + names)
    mount.mkdir()
    entry = pwd.getpwnam("postgres")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700,uid=%d,gid=%d" % (entry.pw_uid, entry.pw_gid),
                    "tmpfs", str(mount)], check=True)
    location = mount / "ts"
    location.mkdir()
    os.chown(location, entry.pw_uid, entry.pw_gid)
    tablespace = names + "_tiny"
    server.sql('CREATE TABLESPACE "%s" LOCATION \'%s\'' % (tablespace, location))
    server.sql('CREATE DATABASE "%s" TABLESPACE "%s"' % (names, tablespace))
    server.sql("CREATE TABLE fill AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body "
               "FROM generate_series(1, %d) g" % FILL_ROWS, dbname=names)
    server.sql("CHECKPOINT")  # the data files hold every page now, not only shared buffers

    def resize(megabytes):
        subprocess.run(["mount", "-o", "remount,size=%dm" % megabytes, str(mount)], check=True)

    yield dict(mount=mount, tablespace=tablespace, resize=resize)
    for name in server.databases():
        if name.startswith(names) or name == _postgres.scratch_name(names):
            server.sql('DROP DATABASE "%s" WITH (FORCE)' % name)
    server.sql('DROP TABLESPACE "%s"' % tablespace)
    subprocess.run(["umount", str(mount)], check=True)
    mount.rmdir()


def test_a_dump_is_private_from_its_first_byte(server, names, tiny_tablespace, tmp_path):
    """The partial file pg_dump writes into is 0600 from its creation, not only once complete: the
    dump holds the data, and a large one is on disk for a while before it is renamed into place."""
    seen = {}

    def watch(stop):
        while not stop.is_set():
            for entry in os.scandir(tmp_path):
                if ".partial-" in entry.name:
                    try:
                        seen.setdefault(entry.name, set()).add(entry.stat().st_mode & 0o777)
                    except FileNotFoundError:
                        pass
            time.sleep(0.002)

    dest, _recorded = dump_alongside(server, tmp_path, names, watch)
    assert seen, "the partial file was never seen"
    assert all(modes == {0o600} for modes in seen.values()), seen
    assert os.stat(dest).st_mode & 0o777 == 0o600


def free_bytes(path):
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_no_room_for_a_second_copy_is_refused(server, names, tiny_tablespace, tmp_path):
    dest, recorded = dump(server, tmp_path, names)
    counts, before = server.table_counts(names), server.databases()
    run = restore(server, names, dest, recorded)
    assert run.failed
    assert run.result["msg"].startswith('refused before any change: not enough room for a second copy of "%s"' % names)
    assert run.result["space"]["path"] == str(tiny_tablespace["mount"] / "ts")
    assert run.result["space"]["available"] < run.result["space"]["needed"]
    assert_untouched(server, names, counts, before)


def test_disk_full_during_the_restore_leaves_the_database_untouched_and_a_rerun_completes(
        server, names, tiny_tablespace, tmp_path):
    dest, recorded = dump(server, tmp_path, names)
    server.sql("DELETE FROM fill WHERE id % 2 = 0", dbname=names)
    counts, before = server.table_counts(names), server.databases()
    free_before = free_bytes(tiny_tablespace["mount"])
    # Told not to check, the restore runs into the full disk.
    run = restore(server, names, dest, recorded, space_check=False)
    assert run.failed
    assert "No space left on device" in run.result["msg"], run.describe()
    assert run.result["msg"].startswith('restore failed, "%s" is untouched: pg_restore failed' % names)
    assert_untouched(server, names, counts, before)
    assert free_bytes(tiny_tablespace["mount"]) >= free_before - 1024 * 1024  # the scratch database's files are gone
    # With room made, the rerun (space check on) completes.
    tiny_tablespace["resize"](96)
    rerun = restore(server, names, dest, recorded)
    assert not rerun.failed, rerun.describe()
    assert server.table_counts(names)[("public", "fill")] == FILL_ROWS
    assert server.table_counts(names + "_before_s1") == counts


def test_a_leftover_scratch_database_does_not_block_the_rerun_for_lack_of_room(server, names, tiny_tablespace, tmp_path):
    dest, recorded = dump(server, tmp_path, names)
    tiny_tablespace["resize"](64)  # room for one more copy, not two
    scratch = _postgres.scratch_name(names)
    server.sql('CREATE DATABASE "%s" TABLESPACE "%s"' % (scratch, tiny_tablespace["tablespace"]))
    server.sql("CREATE TABLE fill AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body "
               "FROM generate_series(1, %d) g" % FILL_ROWS, dbname=scratch)
    server.sql("CHECKPOINT")
    run = restore(server, names, dest, recorded)
    assert not run.failed, run.describe()
    assert run.result["leftovers_dropped"] == [scratch]
    space = run.result["space"]
    # Without the leftover counted as free, the rerun would have been refused.
    assert space["available"] - space["leftover_scratch"] < space["needed"] <= space["available"]
    assert server.table_counts(names)[("public", "fill")] == FILL_ROWS


def test_in_place_restore_when_there_is_no_room(server, names, tiny_tablespace, tmp_path):
    dest, recorded = dump(server, tmp_path, names)
    server.sql("DELETE FROM fill WHERE id > 150000", dbname=names)
    safety_dir = tmp_path / "safety"
    safety_dir.mkdir()
    check = restore(server, names, dest, recorded, check=True, in_place_if_no_room=True, safety_dump_dir=str(safety_dir))
    assert not check.failed, check.describe()
    assert check.result["in_place"] is True
    assert any(step.startswith("take a safety dump of") for step in check.result["plan"])
    assert os.listdir(safety_dir) == []
    run = restore(server, names, dest, recorded, in_place_if_no_room=True, safety_dump_dir=str(safety_dir))
    assert not run.failed, run.describe()
    assert run.result["in_place"] is True and run.result["safety_copy"] is None
    safety = run.result["safety_dump"]
    assert safety["tables"] == {"public.fill": 150000}
    assert safety["sha256"] == _postgres.sha256_file(safety["path"])
    assert os.path.dirname(safety["path"]) == str(safety_dir)
    assert server.table_counts(names)[("public", "fill")] == FILL_ROWS
    assert server.sql("SELECT spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace "
                      "WHERE datname = %s", (names,)) == [(tiny_tablespace["tablespace"],)]


def test_in_place_restore_that_fails_puts_the_safety_dump_back(server, names, tiny_tablespace, tmp_path):
    owner = names + "_gone"
    server.sql('CREATE ROLE "%s"' % owner)
    server.sql('ALTER TABLE fill OWNER TO "%s"' % owner, dbname=names)
    dest, recorded = dump(server, tmp_path, names)
    server.sql("ALTER TABLE fill OWNER TO postgres", dbname=names)
    server.sql('DROP ROLE "%s"' % owner)
    server.sql("DELETE FROM fill WHERE id > 120000", dbname=names)
    counts = server.table_counts(names)
    run = restore(server, names, dest, recorded, in_place_if_no_room=True, safety_dump_dir=str(tmp_path))
    assert run.failed
    assert run.result["msg"].startswith('restore failed; "%s" was put back from the safety dump' % names), run.describe()
    assert server.table_counts(names) == counts
    assert server.answers(names)
    assert _postgres.scratch_name(names) not in server.databases()


def test_in_place_restore_refused_at_the_drop_leaves_the_database_open(server, names, tiny_tablespace, tmp_path):
    """The drop is refused after connections were blocked (here by a logical replication
    subscription, never connected; also prepared transactions or a replication slot): the database is
    untouched and accepts connections again, not left blocked for the services started afterwards."""
    dest, recorded = dump(server, tmp_path, names)
    server.sql("DELETE FROM fill WHERE id > 150000", dbname=names)
    counts = server.table_counts(names)
    server.sql("CREATE SUBSCRIPTION lastgood_test_sub CONNECTION 'host=127.0.0.1 port=1 dbname=none' "
               "PUBLICATION none WITH (connect = false, slot_name = NONE)", dbname=names)
    try:
        run = restore(server, names, dest, recorded, in_place_if_no_room=True, safety_dump_dir=str(tmp_path))
        assert run.failed
        msg = run.result["msg"]
        assert msg.startswith('could not drop "%s", it is untouched (its safety dump is %s' % (names, tmp_path)), msg
        assert "is being used by logical replication subscription" in msg and "\n" not in msg
        assert server.sql("SELECT datallowconn FROM pg_database WHERE datname = %s", (names,)) == [(True,)]
        assert server.answers(names)
        assert server.table_counts(names) == counts
    finally:
        server.sql("DROP SUBSCRIPTION lastgood_test_sub", dbname=names)


# -- the safety copy ----------------------------------------------------------------------------------

def test_safety_copies_are_never_replaced_and_can_be_dropped(server, names, tmp_path):
    counts = make_shop(server, names, customers=50)
    dest, recorded = dump(server, tmp_path, names)
    change_data(server, names)
    changed = server.table_counts(names)
    first = restore(server, names, dest, recorded)
    second = restore(server, names, dest, recorded)
    assert not first.failed and not second.failed, second.describe()
    assert (first.result["safety_copy"], second.result["safety_copy"]) == (names + "_before_s1", names + "_before_s1_2")
    assert server.table_counts(names + "_before_s1") == changed  # the first copy still holds the pre-restore rows

    check = pg_server.run_module("postgres_restore", dict(conn(server), database=names, snapshot_id="s1",
                                                          state="previous_dropped"), check=True)
    assert check.result["dropped"] == [names + "_before_s1", names + "_before_s1_2"] and check.result["changed"]
    assert names + "_before_s1" in server.databases()
    drop = pg_server.run_module("postgres_restore", dict(conn(server), database=names, snapshot_id="s1",
                                                         state="previous_dropped"))
    assert not drop.failed and drop.result["changed"] is True
    assert [n for n in server.databases() if n.startswith(names)] == [names]
    again = pg_server.run_module("postgres_restore", dict(conn(server), database=names, snapshot_id="s1",
                                                          state="previous_dropped"))
    assert again.result["changed"] is False and again.result["dropped"] == []
    assert server.table_counts(names) == counts


def test_keep_previous_false_drops_it_after_the_swap(server, names, tmp_path):
    counts = make_shop(server, names, customers=50)
    dest, recorded = dump(server, tmp_path, names)
    change_data(server, names)
    run = restore(server, names, dest, recorded, keep_previous=False)
    assert not run.failed, run.describe()
    assert run.result["safety_copy"] is None
    assert [n for n in server.databases() if n.startswith(names)] == [names]
    assert server.table_counts(names) == counts


def test_restore_creates_a_database_that_is_gone(server, names, tmp_path):
    counts = make_shop(server, names, customers=50)
    dest, recorded = dump(server, tmp_path, names)
    server.sql('DROP DATABASE "%s"' % names)
    run = restore(server, names, dest, recorded)
    assert not run.failed, run.describe()
    assert run.result["safety_copy"] is None
    assert "swap_window_s" not in run.result
    assert server.table_counts(names) == counts


# -- the password ------------------------------------------------------------------------------------

def playbook_verbose(playbook, inventory):
    """ansible-playbook -vvv; the JSON document of the test callback is its last line starting with '{'."""
    args = [str(ansible_run.ANSIBLE_PLAYBOOK), "-vvv", "-i", str(inventory), str(playbook)]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ansible_run.REPO_ROOT, env=ansible_run.ansible_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    run = ansible_run.AnsibleRun(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    documents = [line for line in proc.stdout.splitlines() if line.startswith('{"')]
    run.output = ansible_run.json.loads(documents[-1]) if documents else None
    return run


def test_the_password_is_in_no_output_and_on_no_command_line(server, bulk, tmp_path):
    name, _dest, _recorded = bulk
    with pg_server.CmdlineSampler(server.password) as sampler:
        inventory = ansible_run.write_inventory(tmp_path, {})
        args = dict(conn(server), database=name)
        tasks = [
            {"name": "dump", "lastgood.rollback.postgres_dump": dict(args, dest=str(tmp_path / "p.dump")),
             "register": "dumped"},
            {"name": "restore", "lastgood.rollback.postgres_restore": dict(
                args, archive=str(tmp_path / "p.dump"), recorded="{{ dumped.dump }}", snapshot_id="pw", jobs=2),
             "diff": True},
            {"name": "failing restore", "lastgood.rollback.postgres_restore": dict(
                args, archive=str(tmp_path / "p.dump"), recorded="{{ dumped.dump | combine({'tables': {}}) }}",
                snapshot_id="pw2"), "ignore_errors": True},
        ]
        playbook = tmp_path / "play.yml"
        playbook.write_text(ansible_run.json.dumps([{"hosts": ansible_run.HOST, "gather_facts": False,
                                                     "tasks": tasks}]))
        run = playbook_verbose(playbook, inventory)
    assert run.rc == 0, run.describe()
    results = dict(run.task_results())
    assert results["dump"]["changed"] and results["restore"]["safety_copy"] == name + "_before_pw"
    assert results["failing restore"]["msg"].startswith("restore failed"), run.describe()
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in run.stdout + run.stderr  # -vvv shows the (masked) arguments
    assert server.password not in run.stdout + run.stderr
    assert sampler.seen == {"pg_dump", "pg_restore"} and sampler.rounds > 10
    assert sampler.leaks == []
    server.sql('DROP DATABASE "%s_before_pw"' % name)


def test_the_password_can_come_from_pgpassword(server, names, tmp_path):
    make_shop(server, names, customers=10)
    env = dict(os.environ, PGPASSWORD=server.password)
    args = dict(conn(server), database=names, dest=str(tmp_path / "e.dump"))
    del args["password"]
    run = pg_server.run_module("postgres_dump", args, env=env)
    assert not run.failed, run.describe()
    assert server.password not in run.stdout


def test_client_programs_from_bin_dir_or_a_clear_error(server, names, tmp_path):
    make_shop(server, names, customers=10)
    no_tools = dict(os.environ, PATH=str(tmp_path))  # nothing of PostgreSQL on this PATH
    missing = pg_server.run_module("postgres_dump", dict(conn(server), database=names, dest=str(tmp_path / "b.dump")),
                                   env=no_tools)
    assert missing.failed, missing.describe()
    assert missing.result["msg"].startswith("pg_dump not found on the managed host")
    run = pg_server.run_module("postgres_dump", dict(conn(server), database=names, dest=str(tmp_path / "c.dump"),
                                                     bin_dir=str(pg_server.PG_BIN)), env=no_tools)
    assert not run.failed, run.describe()
