# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compose files a snapshot records for a project that names none are the ones the real
`docker compose` reads: its default file, the first found, and the override file it adds on top."""

from __future__ import annotations

import json
import sys

import pytest

try:
    from . import pg_server, stacks
except ImportError:
    import pg_server
    import stacks

if str(pg_server.COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(pg_server.COLLECTIONS))

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import ComposeProject  # noqa: E402

DEFAULT = ["compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"]
OVERRIDE = ["compose.override.yml", "compose.override.yaml", "docker-compose.override.yml", "docker-compose.override.yaml"]


class Module:
    @staticmethod
    def get_bin_path(name, required=False):
        return None


def key(name):
    return "F_" + name.replace(".", "_").replace("-", "_").upper()


def files_compose_reads(directory):
    """The files `docker compose config` merged: each file sets its own key, and LAST, which the
    file merged last wins."""
    run = stacks.run(["docker", "compose", "--project-directory", str(directory), "--project-name", "lgfiles",
                      "config", "--format", "json"], cwd="/", env=stacks.clean_env(), check=False)
    if run.returncode != 0:
        assert "no configuration file provided" in run.stderr, run.stderr
        return set(), None
    environment = json.loads(run.stdout)["services"]["x"]["environment"]
    return ({name for name in DEFAULT + OVERRIDE if key(name) in environment}, environment["LAST"])


@pytest.mark.parametrize("present", [
    DEFAULT + OVERRIDE,
    DEFAULT[1:] + OVERRIDE[1:],
    DEFAULT[2:] + OVERRIDE[2:],
    DEFAULT[3:] + OVERRIDE[3:],
    ["docker-compose.yml", "compose.override.yaml"],
    ["compose.yaml"],
    OVERRIDE,
])
def test_the_files_a_snapshot_records_are_the_ones_compose_reads(tmp_path, present):
    for name in present:
        image = "    image: lastgood-bench/busybox:1\n" if name in DEFAULT else ""
        (tmp_path / name).write_text("services:\n  x:\n%s    environment:\n      %s: '1'\n      LAST: %s\n"
                                     % (image, key(name), name))
    used = ComposeProject(Module(), str(tmp_path)).compose_files()
    read, last = files_compose_reads(tmp_path)
    assert set(used) == read
    assert (used[-1] if used else None) == last
