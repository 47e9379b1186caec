# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention of the images tier 2 rollbacks replaced (snapshot_create keep_replaced), on a real engine.

A compose project of its own runs an image from a repository of its own, which already holds
six rolled-back-<UTC ts> tags as six image rollbacks would have left them (one of them the only
tag of an image of its own), an operator's own rolled-back-manual tag, and a rolled-back tag in
another repository. A snapshot with keep_replaced=3 plans, then untags, the three oldest of the
collection's tags of that repository only; the image whose last tag went is gone; a second
snapshot untags nothing.
"""

from __future__ import annotations

import secrets

import docker
import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

BASE = "lastgood-bench/busybox:1"
COMPOSE = """\
services:
  app:
    image: {image}
    command: ["sleep", "300"]
    network_mode: host
"""
STAMPS = ["20261101T000000Z", "20261102T000000Z", "20261103T000000Z", "20261104T000000Z", "20261104T000000Z-2",
          "20261105T000000Z"]


def repository_tags(client, repository):
    return sorted(tag for image in client.api.images(name=repository) for tag in image.get("RepoTags") or ()
                  if tag.startswith(repository + ":"))


@pytest.fixture(scope="module")
def project(docker_client, tmp_path_factory):
    work = tmp_path_factory.mktemp("retention")
    name = "lgtret%s" % secrets.token_hex(3)
    repository, other = "lgtest-%s/app" % name, "lgtest-%s/other" % name
    base_id = docker_client.images.get(BASE).id
    for reference in ["%s:1" % repository, "%s:rolled-back-manual" % repository, "%s:rolled-back-20261001T000000Z" % other]:
        docker_client.api.tag(base_id, *reference.rsplit(":", 1))
    for stamp in STAMPS[1:]:
        docker_client.api.tag(base_id, repository, "rolled-back-" + stamp)
    # The oldest replaced image is an image of its own, held by nothing but its rolled-back tag.
    own = ansible_run.throwaway_image(docker_client, BASE, repository, "rolled-back-" + STAMPS[0], name)
    directory = work / name
    directory.mkdir()
    (directory / "compose.yaml").write_text(COMPOSE.format(image="%s:1" % repository))
    stacks.run(["docker", "compose", "-p", name, "up", "-d"], cwd=directory)
    inventory = ansible_run.write_inventory(work, {})
    args = {"project_dir": str(directory), "project_name": name, "backup_root": str(work / "backups"),
            "keep_replaced": 3}
    try:
        yield dict(client=docker_client, repository=repository, other=other, own=own, work=work, inventory=inventory,
                   args=args)
    finally:
        stacks.run(["docker", "compose", "-p", name, "down", "--timeout", "0"], cwd=directory, check=False)
        for tag in repository_tags(docker_client, repository) + repository_tags(docker_client, other):
            try:
                docker_client.api.remove_image(tag, noprune=False)
            except docker.errors.APIError:
                pass


def snapshot(project, check=False, **args):
    return ansible_run.run_module(project["inventory"], "snapshot_create", dict(project["args"], **args),
                                  project["work"], check=check)


def test_a_snapshot_keeps_the_newest_replaced_images_of_each_repository(project):
    client, repository = project["client"], project["repository"]
    before = repository_tags(client, repository)
    oldest = ["%s:rolled-back-%s" % (repository, stamp) for stamp in STAMPS[:3]]

    planned = snapshot(project, check=True)
    assert planned.rc == 0, planned.describe()
    assert planned.result()["replaced_untagged"] == oldest
    assert repository_tags(client, repository) == before, "check mode untagged something"

    done = snapshot(project)
    assert done.rc == 0, done.describe()
    result = done.result()
    assert result["replaced_untagged"] == oldest and result["replaced_kept"] == []
    left = [tag for tag in repository_tags(client, repository) if ":rolled-back-" in tag]
    assert left == ["%s:rolled-back-%s" % (repository, stamp) for stamp in STAMPS[3:]] + [
        "%s:rolled-back-manual" % repository], left
    # The image held only by its rolled-back tag is gone; the other repository is untouched.
    assert ansible_run.image_id_or_none(client, project["own"]) is None
    assert repository_tags(client, project["other"]) == ["%s:rolled-back-20261001T000000Z" % project["other"]]

    again = snapshot(project)
    assert again.rc == 0 and again.result()["replaced_untagged"] == [], again.describe()


def test_a_negative_keep_replaced_is_a_one_line_error(project):
    run = snapshot(project, keep_replaced=-1)
    assert run.rc != 0
    assert run.failure_msg() == "keep_replaced must be 0 (keep all) or a positive number, got -1"
