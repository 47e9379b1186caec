# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which override file a code move vouches for (git_revert.vouched_override), on real files."""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.lastgood.rollback.plugins.modules.git_revert import vouched_override

OVERRIDE = "compose.override.yaml"


class Project:
    """The two things vouched_override asks of a ComposeProject."""

    def __init__(self, directory):
        self.project_dir = str(directory)

    def override_files(self):
        return [OVERRIDE] if os.path.isfile(os.path.join(self.project_dir, OVERRIDE)) else []


def manifest(compose_files, files):
    return {"project": {"compose_files": compose_files}, "files": files}


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def project(tmp_path):
    real = tmp_path.resolve() / "project"
    real.mkdir()
    (real / "compose.yaml").write_text("services: {}\n")
    return Project(real)


def test_the_snapshot_vouches_for_the_content_it_recorded_among_its_compose_files(project, tmp_path):
    (tmp_path / "project" / OVERRIDE).write_text("services: {web: {}}\n")
    recorded = {OVERRIDE: {"sha256": sha("services: {web: {}}\n")}}
    assert vouched_override(project, manifest(["compose.yaml", OVERRIDE], recorded), False) == (OVERRIDE, OVERRIDE)
    # Recorded, but not among the files the stack ran with (a config_files glob took it).
    assert vouched_override(project, manifest(["compose.yaml"], recorded), False) is None
    # Changed since the snapshot.
    other = {OVERRIDE: {"sha256": sha("services: {}\n")}}
    assert vouched_override(project, manifest(["compose.yaml", OVERRIDE], other), False) is None
    # No snapshot, unless the caller vouches for it.
    assert vouched_override(project, None, False) is None
    assert vouched_override(project, None, True) == (OVERRIDE, OVERRIDE)


def test_a_linked_override_is_vouched_for_by_what_it_links_to(project, tmp_path):
    directory = tmp_path / "project"
    (directory / "envs").mkdir()
    (directory / "envs" / "prod.yaml").write_text("services: {web: {}}\n")
    (directory / OVERRIDE).symlink_to("envs/prod.yaml")
    recorded = {"envs/prod.yaml": {"sha256": sha("services: {web: {}}\n")}}
    assert vouched_override(project, manifest(["compose.yaml", "envs/prod.yaml"], recorded), False) == (
        OVERRIDE, "envs/prod.yaml")


def test_an_override_linking_outside_stays_when_the_snapshot_listed_it(project, tmp_path):
    (tmp_path / "outside.yaml").write_text("services: {}\n")
    (tmp_path / "project" / OVERRIDE).symlink_to(tmp_path / "outside.yaml")
    assert vouched_override(project, manifest(["compose.yaml", OVERRIDE], {}), False) == (OVERRIDE, OVERRIDE)
    assert vouched_override(project, manifest(["compose.yaml"], {}), False) is None
