"""Shared pieces of the bench scripts: a disposable demo stack, an inventory for it, timed runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from stacks import Stack, docker_client  # noqa: E402  (after the path is set)

ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
PYTHON = REPO / ".venv" / "bin" / "python"


def write_inventory(directory: Path, stack: Stack, backup_root: Path, extra=None) -> Path:
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(PYTHON),
        "lastgood_project_dir": str(stack.dir),
        "lastgood_backup_root": str(backup_root),
        "lastgood_health_checks": [
            {"name": "app-health", "url": stack.url("app", "/health"), "status": [200], "timeout_s": 2},
            {"name": "static", "url": stack.url("static", "/"), "status": [200], "timeout_s": 2},
        ],
    }
    host_vars.update(extra or {})
    path = directory / "inventory.json"
    # A YAML inventory accepts JSON.
    path.write_text(json.dumps({"all": {"hosts": {"localhost": host_vars}}}))
    return path


def playbook(inventory: Path, name: str, *args, check=True):
    """Run one playbook from the repository root; returns (seconds, CompletedProcess)."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.null" if name == "_empty" else "default")
    path = REPO / "playbooks" / f"{name}.yml" if not name.startswith("/") else Path(name)
    started = time.monotonic()
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(path), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if check and proc.returncode != 0:
        raise RuntimeError(f"{path.name} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc


def empty_playbook(directory: Path) -> Path:
    path = directory / "empty.yml"
    path.write_text("---\n- name: Empty\n  hosts: all\n  gather_facts: false\n  tasks: []\n")
    return path


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def floor_summary(label, rounds):
    """Print the floor-method figures of the tier benches and return the exit code.

    rounds: dicts with a (the playbook), b (an empty playbook), c (the floor: the same change done
    by hand) and, when a prober watched, outage. Targets: a - b <= 2c + 2 and outage <= c + 1.
    """
    a = median(r["a"] for r in rounds)
    b = median(r["b"] for r in rounds)
    c = median(r["c"] for r in rounds)
    met = a - b <= 2 * c + 2
    worst_margin = max((r["a"] - r["b"]) - (2 * r["c"] + 2) for r in rounds)
    print()
    print(f"{label} (a): {a:.2f} s   empty playbook (b): {b:.2f} s   floor (c): {c:.2f} s")
    print(f"(a) - (b) = {a - b:.2f} s   target <= 2 x (c) + 2 = {2 * c + 2:.2f} s   "
          f"{'MET' if met else 'MISSED'} (worst round margin {worst_margin:+.2f} s)")
    if all("outage" in r for r in rounds):
        outage = median(r["outage"] for r in rounds)
        worst_outage_margin = max(r["outage"] - (r["c"] + 1) for r in rounds)
        print(f"longest outage (20 Hz prober on /version): {outage:.2f} s   target <= (c) + 1 = {c + 1:.2f} s   "
              f"{'MET' if outage <= c + 1 else 'MISSED'} (worst round margin {worst_outage_margin:+.2f} s)")
        met = met and outage <= c + 1
    return 0 if met else 1


def rolled_back_tags(client):
    """The image tier's rolled-back-* tags on this engine."""
    return {tag for image in client.images.list() for tag in image.tags if ":rolled-back-" in tag}


def remove_rolled_back_tags(client, before):
    """Untag the rolled-back-* tags a bench's rollbacks added (those not in `before`): the images
    stay under their own tags, and the engine does not collect a tag per rollback round."""
    for tag in sorted(rolled_back_tags(client) - before):
        client.images.remove(tag)


__all__ = ["Stack", "docker_client", "write_inventory", "playbook", "empty_playbook", "temp_dir", "median",
           "floor_summary", "rolled_back_tags", "remove_rolled_back_tags"]
