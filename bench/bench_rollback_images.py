"""Issue figures for tier 2 (images), on the demo stack with one broken service out of three.

(a) wall time of playbooks/rollback_images.yml
(b) wall time of an empty playbook against the same inventory
(c) the floor: `docker tag` + `docker compose up -d <service>` + first healthy answer
Targets: (a) - (b) <= 2 x (c) + 2 s; longest outage seen by a 20 Hz prober during the
rollback <= (c) + 1 s.  Runs RUNS rounds and prints medians and the worst round.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import http.client
import urllib.request

from common import (
    REPO, Stack, docker_client, empty_playbook, floor_summary, playbook, remove_rolled_back_tags,
    rolled_back_tags, temp_dir, write_inventory,
)
from prober import Prober

RUNS = int(os.environ.get("RUNS", "3"))
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def healthy(url):
    try:
        with _NO_PROXY.open(url, timeout=0.5) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def wait_healthy(url, started, timeout=60):
    """Poll `url` until it answers 200; the seconds since `started` (the floor's clock)."""
    while not healthy(url):
        if time.monotonic() > started + timeout:
            raise RuntimeError("floor: app never answered healthy")
        time.sleep(0.02)
    return time.monotonic() - started


def deploy(stack: Stack, image: str):
    """Move the app's tag and recreate it, then wait until the new version answers: a container
    stopped before its process installed its SIGTERM handler would wait out the grace period."""
    stack.tag_app(image)
    stack.compose("up", "-d", "--no-deps", "app")
    version = image.rsplit(":", 1)[1]
    deadline = time.monotonic() + 30
    while True:
        try:
            with _NO_PROXY.open(stack.url("app", "/version"), timeout=0.5) as response:
                if version in response.read().decode():
                    return
        except (OSError, http.client.HTTPException):  # the old container going away mid-answer
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("deploy: %s never answered" % image)
        time.sleep(0.02)


def floor_seconds(stack: Stack) -> float:
    """docker tag + docker compose up -d app + first healthy answer, by hand."""
    health = stack.url("app", "/health")
    repo, tag = stack.app_image.rsplit(":", 1)
    started = time.monotonic()
    subprocess.run(["docker", "tag", "lastgood-demo/app:v1", f"{repo}:{tag}"], check=True)
    stack.compose("up", "-d", "--no-deps", "app")
    return wait_healthy(health, started)


def main():
    work = temp_dir("lastgood-bench-images-")
    client = docker_client()
    tags_before = rolled_back_tags(client)
    stack = Stack.create(work, client)
    try:
        inventory = write_inventory(work, stack, work / "backups")
        playbook(inventory, "snapshot")
        empty = empty_playbook(work)
        rounds = []
        for _round in range(RUNS):
            deploy(stack, "lastgood-demo/app:v2")
            b = playbook(inventory, str(empty))[0]
            with Prober(stack.url("app", "/version")) as prober:
                time.sleep(0.5)  # let the prober establish a baseline before the rollback starts
                started = time.monotonic()
                a, proc = playbook(inventory, "rollback_images")
                ended = time.monotonic()
                time.sleep(0.3)
            outage = prober.longest_outage_s(started, ended)
            recovered = prober.first_ok_after(started)
            deploy(stack, "lastgood-demo/app:v2")
            c = floor_seconds(stack)
            stack.tag_app("lastgood-demo/app:v1")
            rounds.append(dict(a=a, b=b, c=c, outage=outage, probes=prober.counts()))
            print(f"round: a={a:.2f}s b={b:.2f}s c={c:.2f}s a-b={a - b:.2f}s outage={outage:.2f}s "
                  f"probes={prober.counts()[0]} failed={prober.counts()[1]}", flush=True)

        return floor_summary("rollback_images.yml", rounds)
    finally:
        stack.destroy()
        remove_rolled_back_tags(client, tags_before)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    sys.exit(main())
