"""Issue figures for tier 3 (code): one bad commit in a service built from source.

The project (tests/integration/code_support.py) is a git work tree with ``web``, built from source
(busybox httpd, a Docker healthcheck), and ``side``, which is not. A bad commit removes web's
/health; it is built and deployed; then:

(a) wall time of playbooks/rollback_code.yml (backup ref, stash, reset, classic build, recreate web, gate, tag)
(b) wall time of an empty playbook against the same inventory
(c) the floor, by hand: `git reset --hard <good>` + `DOCKER_BUILDKIT=0 docker compose build web`
    + `docker compose up -d --no-deps web` + first healthy answer of /health
Targets (as for tier 2): (a) - (b) <= 2 x (c) + 2 s; longest outage seen by a 20 Hz prober on /version
during the rollback <= (c) + 1 s. Runs RUNS rounds and prints medians and the worst round.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

from common import REPO, PYTHON, docker_client, empty_playbook, floor_summary, playbook, temp_dir
from prober import Prober

import code_support  # noqa: E402  (tests/integration is on the path through common)

RUNS = int(os.environ.get("RUNS", "3"))
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url, expected=None):
    try:
        with _NO_PROXY.open(url, timeout=0.5) as response:
            body = response.read().decode()
            return response.status == 200 and (expected is None or body.strip() == expected)
    except (OSError, http.client.HTTPException):
        return False


def wait_for(url, expected, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not answers(url, expected):
        if time.monotonic() > deadline:
            raise RuntimeError("%s: never answered" % what)
        time.sleep(0.02)


def deploy_bad(repo, bad):
    """The release that broke the service: the branch at the bad commit, built and running."""
    repo.git("reset", "-q", "--hard", bad)
    repo.deploy()
    wait_for(repo.url("web", "/version"), "bad", "deploy of the bad commit")


def floor_seconds(repo, good):
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    started = time.monotonic()
    subprocess.run(["git", "-C", str(repo.dir), "reset", "-q", "--hard", good], check=True)
    subprocess.run(["docker", "compose", "build", "web"], cwd=repo.dir, env=env, check=True, capture_output=True)
    subprocess.run(["docker", "compose", "up", "-d", "--no-deps", "web"], cwd=repo.dir, env=env, check=True,
                   capture_output=True)
    wait_for(repo.url("web", "/health"), None, "floor")
    return time.monotonic() - started


def write_inventory(work, repo):
    host_vars = dict(repo.host_vars(work / "backups"), ansible_connection="local", ansible_python_interpreter=str(PYTHON))
    path = work / "inventory.json"
    path.write_text(json.dumps({"all": {"hosts": {"localhost": host_vars}}}))
    return path


def main():
    work = temp_dir("lastgood-bench-code-")
    client = docker_client()
    repo = code_support.CodeRepo.create(work, client)
    try:
        inventory = write_inventory(work, repo)
        good = repo.head()
        bad = repo.commit_bad()
        empty = empty_playbook(work)
        rounds = []
        for _round in range(RUNS):
            deploy_bad(repo, bad)
            b = playbook(inventory, str(empty))[0]
            with Prober(repo.url("web", "/version")) as prober:
                time.sleep(0.5)  # a baseline before the rollback starts
                started = time.monotonic()
                a, _proc = playbook(inventory, "rollback_code", "-e", json.dumps({"lastgood_git_ref": good}))
                ended = time.monotonic()
                time.sleep(0.3)
            outage = prober.longest_outage_s(started, ended)
            if repo.head() != good or not answers(repo.url("web", "/version"), "good"):
                raise RuntimeError("the rollback did not bring the good release back")
            deploy_bad(repo, bad)
            c = floor_seconds(repo, good)
            rounds.append(dict(a=a, b=b, c=c, outage=outage))
            print(f"round: a={a:.2f}s b={b:.2f}s c={c:.2f}s a-b={a - b:.2f}s outage={outage:.2f}s "
                  f"probes={prober.counts()[0]} failed={prober.counts()[1]}", flush=True)

        return floor_summary("rollback_code.yml", rounds)
    finally:
        repo.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    sys.exit(main())
