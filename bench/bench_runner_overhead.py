"""Issue figure: a playbook run through ansible-runner (as an AWX job runs it) costs no more than
10 % over the same run through ansible-playbook.

On a disposable demo stack with a last known good snapshot, runs playbooks/verify.yml (read-only,
so every round sees the same stack) RUNS times each way, alternating, with the same inventory,
settings and collection path:

  ansible-playbook -i <inventory> playbooks/verify.yml          from the repository root
  ansible-runner run <private data dir> -p playbooks/verify.yml  an AWX-style job (see
                                                                 tests/integration/runner_support.py)

Prints both medians and the overhead in per cent; exits 1 when it is above TARGET_PCT.
PLAYBOOK=snapshot measures the snapshot playbook instead (each round writes a snapshot).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from common import REPO, Stack, docker_client, median, temp_dir

sys.path.insert(0, str(REPO / "tests" / "integration"))
import runner_support  # noqa: E402  (after the path is set)

RUNS = int(os.environ.get("RUNS", "7"))
PLAYBOOK = os.environ.get("PLAYBOOK", "verify")
TARGET_PCT = 10.0
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"


def host_vars(stack, backup_root):
    return {
        "lastgood_project_dir": str(stack.dir),
        "lastgood_backup_root": str(backup_root),
        "lastgood_health_checks": [
            {"name": "app-health", "url": stack.url("app", "/health"), "status": [200], "timeout_s": 2},
            {"name": "static", "url": stack.url("static", "/"), "status": [200], "timeout_s": 2},
        ],
    }


def via_ansible_playbook(job):
    """The same job's inventory, extra vars and environment, through ansible-playbook."""
    args = [str(ANSIBLE_PLAYBOOK), "-i", str(job.dir / "inventory" / "hosts"),
            "-e", "@%s" % (job.dir / "env" / "extravars"), "playbooks/%s.yml" % PLAYBOOK]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=REPO, env=runner_support.runner_env(), capture_output=True, text=True,
                          check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError("ansible-playbook failed (%d):\n%s" % (proc.returncode, proc.stdout[-4000:]))
    return elapsed


def via_ansible_runner(work, round_no, variables):
    job = runner_support.AwxJob.prepare(work / ("job-%d" % round_no), "playbooks/%s.yml" % PLAYBOOK, variables)
    job.run()
    if job.status != "successful":
        raise RuntimeError("ansible-runner job failed:\n%s" % job.describe())
    if "lastgood_outcome" not in job.artifacts:
        raise RuntimeError("the job published no lastgood_outcome artifact:\n%s" % job.describe())
    return job, job.duration_s


def main():
    work = temp_dir("lastgood-bench-runner-")
    client = docker_client()
    stack = Stack.create(work, client)
    backup_root = work / "backups"
    variables = host_vars(stack, backup_root)
    playbook_times, runner_times = [], []
    try:
        first, _seconds = via_ansible_runner(work, 0, dict(variables))
        snapshot = runner_support.AwxJob.prepare(work / "snapshot", "playbooks/snapshot.yml", variables).run()
        if snapshot.status != "successful":
            raise RuntimeError("snapshot failed:\n%s" % snapshot.describe())
        via_ansible_playbook(first)  # warm both paths once (page cache, .pyc)
        for round_no in range(1, RUNS + 1):
            job, seconds = via_ansible_runner(work, round_no, variables)
            runner_times.append(seconds)
            playbook_times.append(via_ansible_playbook(job))
            shutil.rmtree(job.dir)
    finally:
        stack.destroy()
        for manifest in backup_root.glob("*/*/manifest.json"):
            for entry in (json.loads(manifest.read_text()).get("services") or {}).values():
                if isinstance(entry, dict) and entry.get("pin"):
                    subprocess.run(["docker", "image", "rm", "--no-prune", entry["pin"]], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)

    base, runner = median(playbook_times), median(runner_times)
    overhead = (runner - base) / base * 100.0
    print("playbooks/%s.yml, %d rounds (medians)" % (PLAYBOOK, RUNS))
    print("  ansible-playbook          %.2f s   (all: %s)" % (base, " ".join("%.2f" % t for t in playbook_times)))
    print("  ansible-runner (AWX job)  %.2f s   (all: %s)" % (runner, " ".join("%.2f" % t for t in runner_times)))
    print("  runner overhead           %+.1f %%  (target <= %.0f %%): %s"
          % (overhead, TARGET_PCT, "met" if overhead <= TARGET_PCT else "MISSED"))
    return 0 if overhead <= TARGET_PCT else 1


if __name__ == "__main__":
    sys.exit(main())
