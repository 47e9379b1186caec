"""Issue figure: a deploy of a broken version starts its rollback within interval x threshold + 1 s
of the first failing health answer.

Each round deploys the broken v2 image through playbooks/deploy.yml (APP_IMAGE in .env), with a
watch of 0.5 s rounds failing after 3 in a row. A 20 Hz prober on /health records the first
failing answer; the rollback's start is the start of the rollback run in the audit log (its
journal opened, lock taken over from the deploy). Prints the medians and the worst round.

RELEASE=crash deploys a release that crashes as it starts instead (APP_PORT=not-a-port: the app
exits 1 at once), with the deploy's default 60 s startup allowance: its refused connections look
like a start, and the crash of the recreated container is what fails the watch.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import time

from common import (
    Stack, docker_client, median, playbook, remove_rolled_back_tags, rolled_back_tags, temp_dir,
    write_inventory,
)
from prober import Prober
from ansible_run import remove_snapshot_pins  # tests/integration, on the path through common

RUNS = int(os.environ.get("RUNS", "3"))
RELEASES = {"broken": {"APP_IMAGE": "lastgood-demo/app:v2"}, "crash": {"APP_PORT": "not-a-port"}}
RELEASE = os.environ.get("RELEASE", "broken")
INTERVAL_S = 0.5
THRESHOLD = 3


def epoch(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def main():
    work = temp_dir("lastgood-bench-deploy-")
    client = docker_client()
    tags_before = rolled_back_tags(client)
    stack = Stack.create(work, client)
    bound = INTERVAL_S * THRESHOLD + 1
    try:
        inventory = write_inventory(work, stack, work / "backups", extra={
            "lastgood_watch_s": 20, "lastgood_watch_interval_s": INTERVAL_S, "lastgood_watch_failures": THRESHOLD})
        audit = work / "backups" / stack.project / "audit.jsonl"
        rounds = []
        for _round in range(RUNS):
            extra = json.dumps({"lastgood_deploy_env": RELEASES[RELEASE]})
            with Prober(stack.url("app", "/health")) as prober:
                offset = time.time() - time.monotonic()
                started = time.monotonic()
                wall, proc = playbook(inventory, "deploy", "-e", extra, check=False)
                time.sleep(0.3)
            if proc.returncode == 0:
                raise RuntimeError("the broken deploy was not refused:\n" + proc.stdout[-3000:])
            lines = [json.loads(line) for line in audit.read_text().splitlines()]
            rollback = [line for line in lines if line["kind"] == "rollback"][-1]
            deploy = [line for line in lines if line["kind"] == "deploy"][-1]
            rollback_start = epoch(rollback["started_at"])
            # The watch's first failing answer: the start of the round that began the failure streak.
            gap = rollback_start - float(deploy["details"]["watch_failing_since"])
            # Stricter, what a user sees: the first failed probe, during the recreation already.
            seen = rollback_start - (prober.first_failure_after(started) + offset)
            recovered = prober.first_ok_after(rollback_start - offset)
            rounds.append((gap, wall, recovered, seen))
            print(f"round: first failing watch answer -> rollback start {gap:.2f} s (bound {bound:.2f} s)   "
                  f"first failed probe -> rollback start {seen:.2f} s   rollback start -> healthy {recovered:.2f} s   "
                  f"deploy.yml {wall:.1f} s   rollback {rollback['result']}", flush=True)
        gap = median(r[0] for r in rounds)
        worst = max(r[0] for r in rounds)
        print()
        print(f"release: {RELEASE} {RELEASES[RELEASE]}")
        print(f"first failing health answer (watch) -> rollback start: median {gap:.2f} s, worst {worst:.2f} s   "
              f"target <= interval x threshold + 1 = {INTERVAL_S} x {THRESHOLD} + 1 = {bound:.2f} s   "
              f"{'MET' if worst <= bound else 'MISSED'}")
        print(f"first failed probe of a 20 Hz prober (the recreation included) -> rollback start: "
              f"median {median(r[3] for r in rounds):.2f} s")
        print(f"rollback start -> first healthy answer: median {median(r[2] for r in rounds):.2f} s")
        return 0 if worst <= bound else 1
    finally:
        stack.destroy()
        remove_rolled_back_tags(client, tags_before)
        remove_snapshot_pins(client, work / "backups")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
