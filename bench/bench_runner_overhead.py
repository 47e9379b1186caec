"""Issue figure: a playbook run through ansible-runner (as an AWX job runs it) costs no more than
10 % over the same run through ansible-playbook.

On a disposable demo stack with a last known good snapshot, runs a playbook RUNS times each way,
alternating, with the same inventory, settings and collection path:

  ansible-playbook -i <inventory> playbooks/<name>.yml           from the repository root
  ansible-runner run <private data dir> -p playbooks/<name>.yml  an AWX-style job (see
                                                                 tests/integration/runner_support.py)

PLAYBOOK=verify (default; read-only, so every round sees the same stack), snapshot (each round
writes a snapshot) or rollback (each round first breaks the app with the v2 image, and auto rolls
it back with the image tier).

Prints both medians and the overhead in per cent; exits 1 when it is above TARGET_PCT. It also
runs an empty playbook both ways: the difference is what ansible-runner costs any job whatever
it runs (starting ansible-runner, its pty, the event stream), which no playbook can avoid, and
the rest of the overhead is the event stream of the playbook's tasks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from common import REPO, Stack, docker_client, empty_playbook, median, temp_dir
from bench_rollback_images import deploy

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


def playbook_path(name):
    return name if name.startswith("/") else "playbooks/%s.yml" % name


def prepare_round(stack, name):
    if name == "rollback":
        deploy(stack, "lastgood-demo/app:v2")


def via_ansible_playbook(job, name=PLAYBOOK):
    """The same job's inventory, extra vars and environment, through ansible-playbook."""
    args = [str(ANSIBLE_PLAYBOOK), "-i", str(job.dir / "inventory" / "hosts"),
            "-e", "@%s" % (job.dir / "env" / "extravars"), playbook_path(name)]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=REPO, env=runner_support.runner_env(), capture_output=True, text=True,
                          check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError("ansible-playbook failed (%d):\n%s" % (proc.returncode, proc.stdout[-4000:]))
    return elapsed


def via_ansible_runner(work, round_no, variables, name=PLAYBOOK):
    job = runner_support.AwxJob.prepare(work / ("job-%s-%d" % (os.path.basename(name), round_no)),
                                        playbook_path(name), variables)
    job.run()
    if job.status != "successful":
        raise RuntimeError("ansible-runner job failed:\n%s" % job.describe())
    if not name.startswith("/") and "lastgood_outcome" not in job.artifacts:
        raise RuntimeError("the job published no lastgood_outcome artifact:\n%s" % job.describe())
    return job, job.duration_s


def main():
    work = temp_dir("lastgood-bench-runner-")
    client = docker_client()
    stack = Stack.create(work, client)
    backup_root = work / "backups"
    variables = host_vars(stack, backup_root)
    playbook_times, runner_times = [], []
    empty_playbook_times, empty_runner_times = [], []
    empty = str(empty_playbook(work))
    try:
        snapshot = runner_support.AwxJob.prepare(work / "snapshot", "playbooks/snapshot.yml", variables).run()
        if snapshot.status != "successful":
            raise RuntimeError("snapshot failed:\n%s" % snapshot.describe())
        # Warm both paths once (page cache, .pyc).
        prepare_round(stack, PLAYBOOK)
        first, _seconds = via_ansible_runner(work, 0, dict(variables))
        prepare_round(stack, PLAYBOOK)
        via_ansible_playbook(first)
        for round_no in range(1, RUNS + 1):
            prepare_round(stack, PLAYBOOK)
            job, seconds = via_ansible_runner(work, round_no, variables)
            runner_times.append(seconds)
            prepare_round(stack, PLAYBOOK)
            playbook_times.append(via_ansible_playbook(job))
            shutil.rmtree(job.dir)
            job, seconds = via_ansible_runner(work, round_no, variables, empty)
            empty_runner_times.append(seconds)
            empty_playbook_times.append(via_ansible_playbook(job, empty))
            shutil.rmtree(job.dir)
    finally:
        stack.destroy()
        for manifest in backup_root.glob("*/*/manifest.json"):
            for entry in (json.loads(manifest.read_text()).get("services") or {}).values():
                if isinstance(entry, dict) and entry.get("pin"):
                    subprocess.run(["docker", "image", "rm", "--no-prune", entry["pin"]], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)

    base, runner = median(playbook_times), median(runner_times)
    fixed = median(empty_runner_times) - median(empty_playbook_times)
    overhead = (runner - base) / base * 100.0
    print("playbooks/%s.yml, %d rounds (medians)" % (PLAYBOOK, RUNS))
    print("  ansible-playbook          %.2f s   (all: %s)" % (base, " ".join("%.2f" % t for t in playbook_times)))
    print("  ansible-runner (AWX job)  %.2f s   (all: %s)" % (runner, " ".join("%.2f" % t for t in runner_times)))
    print("  runner overhead           %+.2f s = %+.1f %%  (target <= %.0f %%): %s"
          % (runner - base, overhead, TARGET_PCT, "met" if overhead <= TARGET_PCT else "MISSED"))
    print("  of which any job pays     %+.2f s (an empty playbook: %.2f s vs %.2f s), %.1f %% of this playbook;"
          " the rest, %+.2f s, is the event stream of its tasks"
          % (fixed, median(empty_runner_times), median(empty_playbook_times), fixed / base * 100.0,
             runner - base - fixed))
    return 0 if overhead <= TARGET_PCT else 1


if __name__ == "__main__":
    sys.exit(main())
