"""Issue figures for tier 1 (configuration), on the demo stack where one .env value broke one service.

The bad change: APP_PORT moves in .env and the stack is redeployed, so the app answers on
another port than its clients (and the health gate) call.

(a) wall time of playbooks/rollback_config.yml
(b) wall time of an empty playbook against the same inventory
(c) the floor, by hand, the way bench_rollback_images.py measures it: put the good .env back
    (a copy) + `docker compose up -d app` + first healthy answer
Target as for tier 2: (a) - (b) <= 2 x (c) + 2 s. Runs RUNS rounds and prints medians and the worst round.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from bench_rollback_images import healthy, wait_healthy
from common import REPO, Stack, docker_client, empty_playbook, floor_summary, playbook, temp_dir, write_inventory
from config_support import ConfigStack  # noqa: E402  (tests/integration is on the path through common)

RUNS = int(os.environ.get("RUNS", "3"))


def set_app_port(stack: Stack, port: int):
    lines = (stack.dir / ".env").read_text().splitlines()
    lines = ["APP_PORT=%d" % port if line.startswith("APP_PORT=") else line for line in lines]
    (stack.dir / ".env").write_text("\n".join(lines) + "\n")


def break_config(stack: Stack, bad_port: int):
    """The bad deploy: the app moves to another port; wait until it runs there."""
    set_app_port(stack, bad_port)
    stack.compose("up", "-d", "--no-deps", "--wait", "--wait-timeout", "60", "app")
    deadline = time.monotonic() + 30
    while healthy(stack.url("app", "/health")):
        if time.monotonic() > deadline:
            raise RuntimeError("break: the app still answers on its old port")
        time.sleep(0.02)


def floor_seconds(stack: Stack, good_env: bytes) -> float:
    """Copy the good .env back + docker compose up -d app + first healthy answer, by hand."""
    health = stack.url("app", "/health")
    started = time.monotonic()
    (stack.dir / ".env").write_bytes(good_env)
    stack.compose("up", "-d", "--no-deps", "app")
    return wait_healthy(health, started)


def main():
    work = temp_dir("lastgood-bench-config-")
    client = docker_client()
    stack = ConfigStack.create(work, client)
    try:
        from stacks import free_port

        inventory = write_inventory(work, stack, work / "backups")
        playbook(inventory, "snapshot")
        good_env = (stack.dir / ".env").read_bytes()
        bad_port = free_port()
        empty = empty_playbook(work)
        rounds = []
        for _round in range(RUNS):
            break_config(stack, bad_port)
            b = playbook(inventory, str(empty))[0]
            a, _proc = playbook(inventory, "rollback_config")
            if (stack.dir / ".env").read_bytes() != good_env or not healthy(stack.url("app", "/health")):
                raise RuntimeError("rollback_config.yml did not bring the good .env and a healthy app back")
            break_config(stack, bad_port)
            c = floor_seconds(stack, good_env)
            rounds.append(dict(a=a, b=b, c=c))
            print(f"round: a={a:.2f}s b={b:.2f}s c={c:.2f}s a-b={a - b:.2f}s", flush=True)

        return floor_summary("rollback_config.yml", rounds)
    finally:
        stack.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    sys.exit(main())
