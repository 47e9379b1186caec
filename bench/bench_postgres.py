"""PostgreSQL dump/restore figures: the modules against the raw tools, on the same ~1 GB database.

Starts a private PostgreSQL 15 server on the host (tests/integration/pg_server.py: 127.0.0.1, a
free port, password authentication), builds a database of about 1 GB with generate_series (four
tables with text and jsonb columns, primary keys and five more indexes), then in one run on that
data:

  dump     raw `pg_dump -Fc` vs lastgood.rollback.postgres_dump (custom format, same compression),
           which also counts every table in the dump's snapshot           target: <= 1.10x
  restore  raw `pg_restore -j2` into a fresh database vs lastgood.rollback.postgres_restore jobs=2
           (scratch database, row count verification, ANALYZE, swap), without the archive
           verification, which is reported on its own (sha256 and full read run side by side)
                                                                          target: <= 1.15x
  runbook  `gunzip -c dump.sql.gz | psql` into a fresh database          the module must beat it
  swap     new connections blocked until the restored database serves:  target: < 1 s
           the module's own measure (server clock) and what a client that stays connected saw

Raw, module (and, for restores, runbook) runs alternate, ROUNDS times; medians are compared. The modules run as Ansible
runs them on a host: `python -m <module> <args file>`, so their figures include the start of the
interpreter. Each run prints its seconds; the machine's load average is printed at the start and
the end, since other work on a 2-core machine moves every figure.

Usage: .venv/bin/python bench/bench_postgres.py [--scale 1.0] [--rounds 3]
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import psycopg2  # noqa: E402  (after the path is set)

from pg_server import PgServer  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"
MODULES = "ansible_collections.lastgood.rollback.plugins.modules."
DATABASE = "shop"
DUMP_TARGET = 1.10
RESTORE_TARGET = 1.15
SWAP_TARGET_S = 1.0

# Sizes at scale 1.0: about 1 GB (pg_database_size) with the indexes.
SCHEMA = """
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, country text,
                        created_at timestamptz NOT NULL, profile jsonb);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL, total numeric(12,2),
                     created_at timestamptz NOT NULL, items jsonb);
CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL, payload jsonb);
CREATE TABLE notes (id bigint PRIMARY KEY, customer_id bigint, body text);
"""
DATA = [
    ("customers", 420000, """
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.invalid', (ARRAY['de','fr','us','jp','br'])[1 + g % 5],
  now() - g * interval '1 minute',
  jsonb_build_object('tier', g % 7, 'tags', jsonb_build_array('t' || g % 13, 't' || g % 17), 'bio', md5(g::text) || md5((g + 1)::text))
FROM generate_series(1, {rows}) g"""),
    ("orders", 1400000, """
INSERT INTO orders SELECT g, 1 + (g::bigint * 7919) % {customers}, (ARRAY['new','paid','shipped','returned'])[1 + g % 4],
  (g % 10000) / 100.0, now() - g * interval '10 seconds',
  jsonb_build_array(jsonb_build_object('sku', 'sku-' || g % 5000, 'qty', 1 + g % 3, 'note', md5(g::text)),
                    jsonb_build_object('sku', 'sku-' || g % 777, 'qty', 1))
FROM generate_series(1, {rows}) g"""),
    ("events", 1750000, """
INSERT INTO events SELECT g, (ARRAY['login','view','cart','checkout','logout'])[1 + g % 5], now() - g * interval '1 second',
  jsonb_build_object('session', md5(g::text), 'path', '/p/' || g % 1000, 'ms', g % 997)
FROM generate_series(1, {rows}) g"""),
    ("notes", 560000, """
INSERT INTO notes SELECT g, 1 + g % {customers}, repeat(md5(g::text) || ' lorem ipsum dolor sit amet ', 1 + g % 6)
FROM generate_series(1, {rows}) g"""),
]
INDEXES = """
CREATE INDEX ON orders (customer_id);
CREATE INDEX ON orders (created_at);
CREATE INDEX ON events (kind, at);
CREATE INDEX ON customers (email);
CREATE INDEX ON notes (customer_id);
"""


def log(text):
    print(text, flush=True)


def load():
    return os.getloadavg()[0]


def timed(argv, env, stdin=None, stdout=None):
    started = time.monotonic()
    proc = subprocess.run([str(a) for a in argv], env=env, stdin=stdin, stdout=stdout or subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=False, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (argv[0], proc.returncode, proc.stderr.decode()[-2000:]))
    return elapsed


def run_module(name, args, workdir):
    """Run a module the way Ansible runs it on a host; (seconds, result)."""
    fd, path = tempfile.mkstemp(dir=str(workdir), suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    env = dict(os.environ, PYTHONPATH=str(REPO / ".collections"))
    started = time.monotonic()
    proc = subprocess.run([str(PYTHON), "-m", MODULES + name, path], env=env, capture_output=True, text=True,
                          check=False)
    elapsed = time.monotonic() - started
    os.unlink(path)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError("%s printed no JSON: %s %s" % (name, proc.stdout[-2000:], proc.stderr[-2000:])) from None
    if result.get("failed"):
        raise RuntimeError("%s failed: %s" % (name, result.get("msg")))
    return elapsed, result


def build_database(server, scale):
    server.sql("CREATE DATABASE %s" % DATABASE)
    conn = server.connect(DATABASE)
    started = time.monotonic()
    customers = int(DATA[0][1] * scale)
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
        for _table, rows, statement in DATA:
            cur.execute(statement.format(rows=int(rows * scale), customers=customers))
        cur.execute(INDEXES)
        cur.execute("VACUUM (FREEZE, ANALYZE)")
        cur.execute("SELECT pg_database_size(current_database())")
        size = cur.fetchone()[0]
    conn.close()
    return size, time.monotonic() - started


class SwapWatcher(threading.Thread):
    """A client that stays connected to the live database, as an application would, and reconnects
    as soon as it is cut off: the time from its last answer from the old database to its first from
    the restored one (told apart by the database's oid) is the window a client saw."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.window = None
        self.failures = 0

    def _oid(self, conn):
        with conn.cursor() as cur:
            cur.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
            return cur.fetchone()[0]

    def run(self):
        conn = self.server.connect(DATABASE)
        first_oid = self._oid(conn)
        last_old = time.monotonic()
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(**dict(self.server.dsn_params(DATABASE), connect_timeout=2))
                    conn.autocommit = True
                oid = self._oid(conn)
                now = time.monotonic()
                if oid == first_oid:
                    last_old = now
                    time.sleep(0.02)
                else:
                    self.window = now - last_old
                    break
            except psycopg2.Error:
                self.failures += 1
                conn = None
                time.sleep(0.005)
        if conn is not None:
            conn.close()


def runbook_restore(server, plain, bin_dir, env):
    """The runbooks' way, timed: `gunzip -c dump.sql.gz | psql` into a fresh database."""
    server.sql("DROP DATABASE IF EXISTS runbook")
    server.sql("CREATE DATABASE runbook")
    started = time.monotonic()
    gunzip = subprocess.Popen(["gunzip", "-c", str(plain)], stdout=subprocess.PIPE)
    psql = subprocess.run([bin_dir + "/psql", "-X", "-q", "-d", "runbook", "-o", "/dev/null"], env=env,
                          stdin=gunzip.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    gunzip.stdout.close()
    gunzip.wait()
    seconds = time.monotonic() - started
    if psql.returncode != 0:
        raise RuntimeError("gunzip | psql failed: %s" % psql.stderr.decode()[-1000:])
    server.sql("DROP DATABASE runbook")
    return seconds


def in_turn(round_number):
    """Which goes first alternates from round to round, so that neither always inherits the other's dirty pages."""
    return ("raw", "module") if round_number % 2 == 0 else ("module", "raw")


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--scale", type=float, default=1.0, help="data size factor (1.0: about 1 GB)")
    parser.add_argument("--rounds", type=int, default=3, help="raw/module pairs per figure")
    options = parser.parse_args()
    bench_started = time.monotonic()
    log("load average at start: %.2f (2 cores)" % load())
    work = Path(tempfile.mkdtemp(prefix="lastgood-bench-pg-"))
    try:
        with PgServer.started() as server:
            env = server.env()
            bin_dir = "/usr/lib/postgresql/15/bin"
            conn_args = {"port": server.port, "host": "127.0.0.1", "user": server.user, "password": server.password,
                         "bin_dir": bin_dir}
            size, seconds = build_database(server, options.scale)
            log("built database %s: %.0f MB in %.1f s" % (DATABASE, size / 1e6, seconds))

            # -- dump ---------------------------------------------------------------------------
            raw_dumps, module_dumps, count_costs = [], [], []
            dumped = None
            for round_number in range(options.rounds):
                dest = work / ("module-%d.dump" % round_number)
                raw_path = work / "raw.dump"
                for which in in_turn(round_number):
                    server.sql("CHECKPOINT")
                    if which == "raw":
                        raw_dumps.append(timed([bin_dir + "/pg_dump", "-Fc", "-f", raw_path, "-d", DATABASE], env))
                        raw_size = raw_path.stat().st_size
                        raw_path.unlink()
                    else:
                        seconds, result = run_module("postgres_dump", dict(conn_args, database=DATABASE, dest=str(dest)),
                                                     work)
                        module_dumps.append(seconds)
                        count_costs.append(result["dump"]["timings"]["count_s"])
                        dumped = result["dump"]
                log("dump round %d: raw pg_dump -Fc %.2f s, module %.2f s (counting %.2f s beside pg_dump, sha256 %.2f s)"
                    % (round_number + 1, raw_dumps[-1], seconds, count_costs[-1], dumped["timings"]["sha256_s"]))
                if round_number + 1 < options.rounds:
                    dest.unlink()
            archive = work / dumped["file"]
            log("dump: %d MB, %d tables, %d rows; raw dump %d MB" % (
                dumped["size"] / 1e6, len(dumped["tables"]), sum(dumped["tables"].values()), raw_size / 1e6))

            # -- archive verification on its own ------------------------------------------------
            sha_s = timed(["sha256sum", archive], env)
            read_s = timed([bin_dir + "/pg_restore", "-f", "/dev/null", archive], env)
            log("archive verification, raw tools: sha256sum %.2f s, pg_restore -f /dev/null %.2f s" % (sha_s, read_s))

            # -- the runbook's dump: plain SQL through gzip ------------------------------------------
            plain = work / "dump.sql.gz"
            with open(plain, "wb") as handle:
                dump = subprocess.Popen([bin_dir + "/pg_dump", "-Fp", "-d", DATABASE], env=env, stdout=subprocess.PIPE)
                gzip = subprocess.run(["gzip", "-c"], stdin=dump.stdout, stdout=handle, check=True)
                dump.stdout.close()
                if dump.wait() != 0 or gzip.returncode != 0:
                    raise RuntimeError("plain dump failed")

            # -- restore: raw pg_restore -j2, the module, the runbook way, in turn -------------------
            raw_restores, module_restores, module_totals, windows, watched, runbooks = [], [], [], [], [], []
            for round_number in range(options.rounds):
                for which in in_turn(round_number):
                    if which == "raw":
                        server.sql("DROP DATABASE IF EXISTS raw_restore")
                        server.sql("CREATE DATABASE raw_restore")
                        server.sql("CHECKPOINT")
                        raw_restores.append(timed([bin_dir + "/pg_restore", "-j2", "-d", "raw_restore", archive], env))
                        server.sql("DROP DATABASE raw_restore")
                        continue
                    server.sql("CHECKPOINT")
                    watcher = SwapWatcher(server)
                    watcher.start()
                    seconds, result = run_module("postgres_restore", dict(
                        conn_args, database=DATABASE, archive=str(archive), recorded=dumped,
                        snapshot_id="bench%d" % round_number, jobs=2), work)
                    watcher.join(timeout=10)
                    watcher.stop.set()
                    timings = result["timings"]
                    module_totals.append(seconds)
                    module_restores.append(seconds - timings["verify_archive_s"])
                    windows.append(result["swap_window_s"])
                    watched.append(watcher.window)
                    server.sql('DROP DATABASE "%s"' % result["safety_copy"])
                log("restore round %d: raw pg_restore -j2 %.2f s; module %.2f s in all = archive verification %.2f s "
                    "(sha256 %.2f s beside full read %.2f s) + %.2f s (pg_restore %.2f s, counts+ANALYZE %.2f s, swap %.2f s); "
                    "swap window %.3f s (server), %s (a connected client)"
                    % (round_number + 1, raw_restores[-1], module_totals[-1], timings["verify_archive_s"],
                       timings["sha256_s"], timings["full_read_s"], module_restores[-1], timings["restore_s"],
                       timings["verify_s"], timings["swap_s"], windows[-1],
                       "%.3f s" % watched[-1] if watched[-1] else "n/a"))

                server.sql("CHECKPOINT")
                runbooks.append(runbook_restore(server, plain, bin_dir, env))
                log("restore round %d: runbook way gunzip -c dump.sql.gz | psql %.2f s" % (round_number + 1, runbooks[-1]))

    finally:
        shutil.rmtree(work, ignore_errors=True)

    dump_ratio = median(module_dumps) / median(raw_dumps)
    restore_ratio = median(module_restores) / median(raw_restores)
    worst_window = max(windows)
    watched_windows = [w for w in watched if w is not None]
    checks = [
        ("dump: module %.2f s / raw pg_dump -Fc %.2f s = %.2fx (target <= %.2fx; counting %.2f s ran beside pg_dump)"
         % (median(module_dumps), median(raw_dumps), dump_ratio, DUMP_TARGET, median(count_costs)),
         dump_ratio <= DUMP_TARGET),
        ("restore: module %.2f s / raw pg_restore -j2 %.2f s = %.2fx (target <= %.2fx); plus archive verification "
         "%.2f s (module in all: %.2f s)"
         % (median(module_restores), median(raw_restores), restore_ratio, RESTORE_TARGET,
            median(module_totals) - median(module_restores), median(module_totals)),
         restore_ratio <= RESTORE_TARGET),
        ("runbook way gunzip | psql %.2f s vs the module in all (verification included) %.2f s"
         % (median(runbooks), median(module_totals)), median(module_totals) < median(runbooks)),
        ("swap window: at most %.3f s (server clock), a connected client saw at most %s (target < %.1f s)"
         % (worst_window, "%.3f s" % max(watched_windows) if watched_windows else "n/a", SWAP_TARGET_S),
         worst_window < SWAP_TARGET_S and all(w < SWAP_TARGET_S for w in watched_windows)),
    ]
    log("")
    log("load average at end: %.2f; bench took %.0f s" % (load(), time.monotonic() - bench_started))
    for text, passed in checks:
        log("%s  %s" % ("PASS" if passed else "MISS", text))
    return 0 if all(passed for _text, passed in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
