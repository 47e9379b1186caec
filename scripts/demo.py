"""make demo: the main job, deploy with automatic rollback, told on the demo stack.

v1 up -> snapshot -> deploy.yml ships v2 (APP_IMAGE in .env; its /health answers 500) ->
the watch fails -> the orchestrator picks the tiers (config + images), rolls back, gates ->
rollback.yml again finds nothing to do -> a short report: what changed, the audit log, time
to recover and the longest outage a 20 Hz prober saw. Uses inventories/demo (project in
/srv/lastgood-demo/stack, snapshots in /srv/lastgood-demo/backups). Everything listens on
127.0.0.1.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from prober import Prober  # noqa: E402


def epoch(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


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
    before = containers()

    step("deploy.yml: ship v2 (APP_IMAGE=%s:v2 in .env), watch it, roll back automatically" % APP)
    deploy_vars = json.dumps({"lastgood_deploy_env": {"APP_IMAGE": "%s:v2" % APP}, "lastgood_watch_s": 15,
                              "lastgood_watch_interval_s": 0.5, "lastgood_watch_failures": 3,
                              "lastgood_reason": "demo: release v2"})
    with Prober("http://127.0.0.1:18080/version") as available, Prober("http://127.0.0.1:18080/health") as health:
        time.sleep(0.3)
        started = time.monotonic()
        offset = time.time() - started
        rc, wall = playbook("deploy", "-e", deploy_vars, check=False)
        ended = time.monotonic()
        time.sleep(0.3)
    print("deploy.yml exit code: %d (expected non-zero: the release failed and was rolled back)" % rc)
    after = containers()

    step("rollback.yml: the orchestrator again, which finds nothing to do")
    playbook("rollback")

    step("verify: the gate passes")
    playbook("verify")

    step("report")
    audit = [json.loads(line) for line in (DEMO_ROOT / "backups" / PROJECT / "audit.jsonl").read_text().splitlines()]
    rollback = [line for line in audit if line["kind"] == "rollback"][0]
    deploy = [line for line in audit if line["kind"] == "deploy"][0]
    rollback_start = epoch(rollback["started_at"]) - offset
    recovered = health.first_ok_after(rollback_start)
    changed = sorted(s for s in after if before.get(s, (None,))[0] != after[s][0])
    print("deploy:                   %s (%s)" % (deploy["result"], deploy["message"]))
    print("rollback tiers:           %s, %s, healthy: %s"
          % (" + ".join(rollback["tiers"]), rollback["result"], rollback["healthy"]))
    print("watch's first failing answer -> rollback start: %.2f s (bound 0.5 s x 3 + 1 s = 2.5 s)"
          % (epoch(rollback["started_at"]) - float(deploy["details"]["watch_failing_since"])))
    print("rollback start -> first healthy /health: %s"
          % ("%.1f s" % recovered if recovered is not None else "never"))
    print("services recreated (v1 -> v2 -> v1): %s; left running: %s"
          % (", ".join(changed) or "none", ", ".join(sorted(set(after) - set(changed)))))
    print("deploy.yml:               %.1f s wall time, snapshot + deploy + watch + rollback" % wall)
    print("longest outage (/version, 20 Hz prober): %.2f s" % available.longest_outage_s(started, ended))
    total, failed = available.counts()
    print("probes during the demo:   %d, failed %d (the broken release answers /version too)" % (total, failed))
    print("reports:                  %s" % ", ".join(
        str(p) for p in sorted((DEMO_ROOT / "backups" / PROJECT / "runs").glob("*/report.md"))))
    print("audit log:                %s" % (DEMO_ROOT / "backups" / PROJECT / "audit.jsonl"))
    print("\nNext: make test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
