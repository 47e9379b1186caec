"""Helpers of the emergency tests and bench: a writer that counts acknowledged commits, snapshot damage."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg2


class Writer(threading.Thread):
    """Inserts one row per transaction (autocommit) until stopped or the server goes away.

    `acknowledged` holds the ids whose COMMIT the server confirmed: those must survive.
    """

    def __init__(self, connect, table="writes"):
        super().__init__(daemon=True)
        self.connect = connect
        self.table = table
        self.acknowledged = []
        self.errors = []
        self.stopping = threading.Event()
        self.first_error_at = None

    def run(self):
        conn = None
        try:
            conn = psycopg2.connect(dbname="app", connect_timeout=3, **self.connect)
            conn.autocommit = True
            with conn.cursor() as cur:
                while not self.stopping.is_set():
                    cur.execute("INSERT INTO %s (at) VALUES (clock_timestamp()) RETURNING id" % self.table)
                    self.acknowledged.append(cur.fetchone()[0])
        except psycopg2.Error as exc:
            self.first_error_at = time.monotonic()
            self.errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        finally:
            if conn is not None:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass

    def stop(self, timeout=10):
        self.stopping.set()
        self.join(timeout)


def create_writes_table(connect, table="writes"):
    with psycopg2.connect(dbname="app", **connect) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS %s (id bigserial PRIMARY KEY, at timestamptz NOT NULL)" % table)


def present_ids(connect, ids, table="writes"):
    """How many of `ids` are in the table."""
    with psycopg2.connect(dbname="app", **connect) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM %s WHERE id = ANY(%%s)" % table, (list(ids),))
        return cur.fetchone()[0]


def count_rows(connect, table="writes"):
    with psycopg2.connect(dbname="app", **connect) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM %s" % table)
        return cur.fetchone()[0]


def damage_dump(backup_root, project, snapshot_id):
    """Change one byte in the middle of the snapshot's first database dump (the sha256 then differs)."""
    snapshot = Path(backup_root) / project / snapshot_id
    manifest = json.loads((snapshot / "manifest.json").read_text())
    rel = next(iter(manifest["databases"].values()))["file"]
    path = snapshot / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return rel


def audit_lines(backup_root, project):
    path = Path(backup_root) / project / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
