"""Security breach: time from the start to isolated (target < 5 s) and to restored and healthy.

A disposable demo stack with a users table is snapshotted; then the "breach" (a changed compose
file, a planted user), and playbooks/security_breach.yml runs with isolation pointed at a
disposable network namespace (the machine's own rules are never touched), secret rotation,
the PostgreSQL role password, a password reset and a patch ref. The times are read from the
procedure's own steps.log (UTC times of its started, isolated and healthy lines) and the whole run's wall time is printed.

    .venv/bin/python bench/bench_breach.py [--runs N] [--timings]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import ANSIBLE_PLAYBOOK, REPO, docker_client, temp_dir, write_inventory

sys.path.insert(0, str(REPO / "tests" / "integration"))

import breach_support as bs  # noqa: E402
import psycopg2  # noqa: E402
from stacks import Stack, run  # noqa: E402


def sql(stack, statement):
    with psycopg2.connect(host="127.0.0.1", port=stack.ports["db"], user="postgres", dbname="app",
                          password=stack_env(stack)["POSTGRES_PASSWORD"]) as conn, conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def stack_env(stack):
    return dict(line.split("=", 1) for line in (stack.dir / ".env").read_text().splitlines() if "=" in line and not line.startswith("#"))


def one_run(work, client, timings):
    stack = Stack.create(work, client)
    netns = bs.Netns.create()
    backup_root = work / "backups"
    try:
        sql(stack, "CREATE TABLE users (name text PRIMARY KEY, must_reset boolean NOT NULL DEFAULT false)")
        sql(stack, "INSERT INTO users (name) VALUES ('ann'), ('bob')")
        base = {"lastgood_databases": [{"name": "app", "service": "db", "port": stack.ports["db"]}]}
        inventory = write_inventory(work, stack, backup_root, base)
        subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(REPO / "playbooks" / "snapshot.yml")],
                       cwd=REPO, check=True, capture_output=True)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        while time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) <= since:
            time.sleep(0.05)  # the breach happens after the snapshot's second
        with open(stack.dir / "compose.yaml", "a", encoding="utf-8") as handle:
            handle.write("# backdoor\n")
        sql(stack, "INSERT INTO users (name) VALUES ('mallory')")
        run(["git", "-C", stack.dir, "tag", "patched"])
        incident = work / ("incident-" + stack.project)
        inventory = write_inventory(work, stack, backup_root, dict(
            base,
            lastgood_breach_since=since,
            lastgood_breach_admin_cidrs=[netns.admin_cidr],
            lastgood_breach_ssh_port=bs.SSH_PORT,
            lastgood_breach_netns=netns.host,
            lastgood_breach_isolation_state_dir=str(work / ("isolation-" + stack.project)),
            lastgood_breach_secrets=[],
            lastgood_breach_database_roles=[{"role": "postgres", "env_key": "POSTGRES_PASSWORD"}],
            lastgood_breach_db_port=stack.ports["db"],
            lastgood_breach_password_reset_sql="UPDATE users SET must_reset = true",
            lastgood_breach_password_reset_database="app",
            lastgood_breach_patch_ref="patched",
            lastgood_breach_incident_dir=str(incident),
        ))
        env = dict(os.environ, ANSIBLE_CALLBACKS_ENABLED="task_timer",
                   ANSIBLE_CALLBACK_PLUGINS=str(REPO / "bench" / "callback_plugins"))
        started = time.monotonic()
        proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(REPO / "playbooks" / "security_breach.yml")],
                              cwd=REPO, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError("security_breach.yml failed:\n%s\n%s" % (proc.stdout[-5000:], proc.stderr[-2000:]))
        if timings:
            print(proc.stdout[proc.stdout.find("task times"):])
        # steps.log: "<UTC time> <step> ..."; the first line carries the procedure's start time.
        stamps = {}
        for line in (incident / "steps.log").read_text().splitlines():
            stamp, step = line.split(" ", 2)[:2]
            stamps.setdefault(step, datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ"))
        isolated = (stamps["isolated"] - stamps["started"]).total_seconds()
        healthy = (stamps["healthy"] - stamps["started"]).total_seconds()
        return isolated, healthy, wall
    finally:
        netns.destroy()
        stack.destroy()
        from ansible_run import remove_snapshot_pins
        remove_snapshot_pins(client, backup_root)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timings", action="store_true", help="print the time of every task")
    args = parser.parse_args()
    client = docker_client()
    work = temp_dir("lgbreach-bench-")
    results = []
    try:
        for _run in range(args.runs):
            results.append(one_run(work, client, args.timings))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    isolated = [r[0] for r in results]
    healthy = [r[1] for r in results]
    wall = [r[2] for r in results]
    print("Breach: start -> isolated %.2f s (target < 5 s, median of %d), -> restored and healthy %.1f s; "
          "whole playbook %.1f s" % (statistics.median(isolated), len(results), statistics.median(healthy), statistics.median(wall)))
    print(json.dumps({"breach_isolated_s": isolated, "breach_healthy_s": healthy, "breach_playbook_s": wall}))


if __name__ == "__main__":
    main()
