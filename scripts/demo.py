"""make demo: the image-tier rollback, told on the demo stack.

v1 up -> snapshot -> deploy v2 (its health check fails) -> the gate fails ->
rollback_images.yml -> the gate passes -> a short report: what changed, time to recover,
and the longest outage a 20 Hz prober saw. Uses inventories/demo (project in
/srv/lastgood-demo/stack, snapshots in /srv/lastgood-demo/backups). Everything listens on
127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from prober import Prober  # noqa: E402

DEMO_ROOT = Path("/srv/lastgood-demo")
PROJECT_DIR = DEMO_ROOT / "stack"
PROJECT = "lastgood-demo"
APP = "lastgood-demo/app"
INVENTORY = REPO / "inventories" / "demo"
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"


def step(text):
    print("\n\033[1m==> %s\033[0m" % text, flush=True)


def run(args, cwd=None, check=True, quiet=False):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, check=False,
                          stdout=subprocess.PIPE if quiet else None,
                          stderr=subprocess.STDOUT if quiet else None, text=True)
    if check and proc.returncode != 0:
        if quiet:
            print(proc.stdout)
        raise SystemExit("demo: %s failed with exit code %d" % (" ".join(map(str, args)), proc.returncode))
    return proc


def compose(*args, check=True):
    return run(["docker", "compose", *args], cwd=PROJECT_DIR, check=check, quiet=True)


def playbook(name, *extra, check=True):
    started = time.monotonic()
    proc = run([PLAYBOOK, "-i", INVENTORY, REPO / "playbooks" / f"{name}.yml", *extra], cwd=REPO, check=check)
    return proc.returncode, time.monotonic() - started


def containers():
    out = run(["docker", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
               "--format", '{{.Label "com.docker.compose.service"}} {{.ID}} {{.Image}}'], quiet=True).stdout
    found = {}
    for line in out.splitlines():
        service, cid, _image = line.split(" ", 2)
        image_id = run(["docker", "inspect", "--format", "{{.Image}}", cid], quiet=True).stdout.strip()
        found[service] = (cid, image_id)
    return found


def fresh_project():
    if PROJECT_DIR.exists():
        # The previous demo's own containers and volume; nothing else is touched.
        compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
        shutil.rmtree(PROJECT_DIR)
    shutil.rmtree(DEMO_ROOT / "backups", ignore_errors=True)
    DEMO_ROOT.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "demo" / "stack", PROJECT_DIR)
    with open(PROJECT_DIR / ".env", "a", encoding="utf-8") as env:
        env.write("COMPOSE_PROJECT_NAME=%s\n" % PROJECT)
    git = ["git", "-C", PROJECT_DIR, "-c", "user.email=demo@localhost", "-c", "user.name=demo"]
    run([*git, "init", "-q"])
    run([*git, "add", "-A"])
    run([*git, "commit", "-q", "-m", "demo stack"])


def main():
    os.environ.setdefault("ANSIBLE_FORCE_COLOR", "1")
    step("v1 up: the demo stack (app v1, PostgreSQL, static) in %s" % PROJECT_DIR)
    fresh_project()
    run(["docker", "tag", f"{APP}:v1", f"{APP}:latest"])
    compose("up", "--detach", "--wait", "--wait-timeout", "90")
    print(compose("ps", "--format", "table {{.Service}}\t{{.Status}}").stdout)

    step("snapshot: record what runs, gate it, mark it last known good")
    playbook("snapshot")

    step("deploy v2: lastgood-demo/app:latest now names v2, whose /health answers 500")
    run(["docker", "tag", f"{APP}:v2", f"{APP}:latest"])
    compose("up", "--detach", "--no-deps", "app")
    before = containers()

    step("verify: the gate fails (5 s deadline)")
    rc = playbook("verify", "-e", "health_gate_deadline_s=5", check=False)[0]
    print("verify exit code: %d (expected non-zero)" % rc)

    step("rollback_images: restore the snapshot's images, recreate only what changed, gate")
    with Prober("http://127.0.0.1:18080/version") as available, Prober("http://127.0.0.1:18080/health") as health:
        time.sleep(0.3)
        started = time.monotonic()
        rc, wall = playbook("rollback_images")
        ended = time.monotonic()
        time.sleep(0.3)
    after = containers()

    step("verify: the gate passes")
    playbook("verify")

    step("report")
    changed = sorted(s for s in after if before.get(s, (None,))[0] != after[s][0])
    unchanged = sorted(s for s in after if s not in changed)
    healthy_after = health.first_ok_after(started)
    print("services recreated:       %s" % (", ".join(
        "%s (%s -> %s)" % (s, before[s][1][7:19], after[s][1][7:19]) for s in changed) or "none"))
    print("services left running:    %s (same container IDs)" % ", ".join(unchanged))
    print("rollback_images.yml:      %.1f s wall time (exit %d)" % (wall, rc))
    print("time to recover:          %s from rollback start to the first healthy /health answer"
          % ("%.1f s" % healthy_after if healthy_after is not None else "never"))
    print("longest outage (/version, 20 Hz prober): %.2f s" % available.longest_outage_s(started, ended))
    total, failed = available.counts()
    print("probes during the demo:   %d, failed %d" % (total, failed))
    kept = run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
                "--filter", "reference=%s:rolled-back-*" % APP], quiet=True).stdout.split()
    print("the broken image is kept: %s" % (max(kept) if kept else "NOT FOUND"))
    print("\nNext: make test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
