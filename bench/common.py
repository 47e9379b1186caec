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


__all__ = ["Stack", "docker_client", "write_inventory", "playbook", "empty_playbook", "temp_dir", "median"]
