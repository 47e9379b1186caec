"""Emergency stop under write load: every container down within the configured grace, and zero
acknowledged writes lost (rows acknowledged vs rows present after PostgreSQL is started again).

A writer inserts one row per autocommit transaction into the demo stack's PostgreSQL and counts
every commit the server acknowledged; emergency_stop.yml runs meanwhile; then the db service is
started again and every acknowledged id is looked up.
"""

from __future__ import annotations

import shutil

from common import docker_client, playbook, temp_dir, write_inventory
from stacks import Stack, wait_until

import emergency_support as support

GRACE_S = 10
DATA_GRACE_S = 60
RUNS = 3


def one_run(client, work):
    stack = Stack.create(work, client)
    try:
        connect = dict(host="127.0.0.1", port=stack.ports["db"], user="postgres", password=stack.password)
        support.create_writes_table(connect)
        inventory = write_inventory(work, stack, work / "backups", extra={
            "lastgood_databases": [{"name": "app", "service": "db", "port": stack.ports["db"]}],
            "lastgood_emergency_grace_s": GRACE_S, "lastgood_emergency_data_grace_s": DATA_GRACE_S})
        writer = support.Writer(connect)
        writer.start()
        wait_until(lambda: len(writer.acknowledged) > 100, 30, message="writes acknowledged")
        took, _proc = playbook(inventory, "emergency_stop")
        writer.stop()
        running = [c.name for c in client.containers.list(filters={"label": "com.docker.compose.project=%s" % stack.project})]
        stack.compose("up", "-d", "--wait", "db")
        acknowledged = len(writer.acknowledged)
        present = support.present_ids(connect, writer.acknowledged)
        return took, acknowledged, present, running
    finally:
        stack.destroy()


def main():
    client = docker_client()
    work = temp_dir("lgt-bench-emergency-")
    try:
        print("Emergency stop under write load (grace %d s, data grace %d s), %d runs" % (GRACE_S, DATA_GRACE_S, RUNS))
        print("%-4s %10s %12s %8s %5s %s" % ("run", "stop s", "acknowledged", "present", "lost", "still running"))
        lost_total = 0
        for index in range(RUNS):
            took, acknowledged, present, running = one_run(client, work)
            lost_total += acknowledged - present
            print("%-4d %10.1f %12d %8d %5d %s" % (index + 1, took, acknowledged, present, acknowledged - present,
                                                   ", ".join(running) or "none"))
            assert took < GRACE_S + DATA_GRACE_S + 20, "stop took %.1f s" % took
        print("bound: grace + data grace = %d s; acknowledged writes lost in total: %d" % (GRACE_S + DATA_GRACE_S, lost_total))
        return 0 if lost_total == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
