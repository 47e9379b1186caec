# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which compose files a project uses: named, from COMPOSE_FILE, or found the way compose finds
them (tests/integration/test_compose_files.py holds that rule against the real CLI), and which of
them a code rollback keeps in place."""

from __future__ import annotations

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import ComposeProject


class NoDocker:
    """The module as ComposeProject uses it, on a host without the docker CLI."""

    @staticmethod
    def get_bin_path(name, required=False):
        return None


def project(directory, files=None):
    return ComposeProject(NoDocker(), str(directory), files)


def touch(directory, *names):
    for name in names:
        (directory / name).write_text("services: {}\n")


@pytest.fixture(autouse=True)
def no_compose_file_env(monkeypatch):
    monkeypatch.delenv("COMPOSE_FILE", raising=False)


@pytest.mark.parametrize("present, used", [
    (["compose.yaml"], ["compose.yaml"]),
    (["compose.yml", "compose.yaml", "compose.override.yaml"], ["compose.yaml", "compose.override.yaml"]),
    ([], []),
])
def test_the_default_file_and_the_override_compose_adds(tmp_path, present, used):
    touch(tmp_path, *present)
    assert project(tmp_path).compose_files() == used
    assert project(tmp_path).compose_files(with_override=False) == used[:1]


def test_named_files_and_compose_file_leave_the_override_out(tmp_path, monkeypatch):
    touch(tmp_path, "compose.yaml", "compose.override.yaml", "prod.yaml")
    assert project(tmp_path, ["compose.yaml", "prod.yaml"]).compose_files() == ["compose.yaml", "prod.yaml"]
    (tmp_path / ".env").write_text("COMPOSE_FILE=compose.yaml:prod.yaml\n")
    assert project(tmp_path).compose_files() == ["compose.yaml", "prod.yaml"]
    monkeypatch.setenv("COMPOSE_FILE", "compose.yaml")
    assert project(tmp_path).compose_files() == ["compose.yaml"]


def test_a_snapshot_records_the_override_a_code_rollback_does_not_keep_it(tmp_path):
    touch(tmp_path, "compose.yaml", "compose.override.yaml")
    assert project(tmp_path).host_files() == [".env", "compose.override.yaml", "compose.yaml"]
    assert project(tmp_path).host_files(with_override=False) == [".env", "compose.yaml"]
