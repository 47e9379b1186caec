#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_image_restore
short_description: Point the image references of compose services back at recorded image IDs
version_added: 0.1.0
description:
  - For every service in O(services) (usually a snapshot manifest's C(services)), tags the recorded image
    ID back onto the service's configured image reference, so that C(docker compose) runs it again.
  - The image the reference named before is kept under C(<repository>:rolled-back-<UTC YYYYmmddTHHMMSSZ>)
    so nothing is lost and the broken release can still be inspected.
  - Everything is verified before the first tag moves - every service still exists in the project with the
    same configured reference, and every recorded image ID is present locally - and the module fails with
    one line naming every problem otherwise.
  - Returns the services whose containers run another image. With O(recreate=true) it also recreates
    exactly those services (C(docker compose up --force-recreate --no-deps --no-build --pull never)) and waits
    until they run and are healthy, in the same module run; otherwise M(lastgood.rollback.compose_service)
    can do that step.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.lock
  - lastgood.rollback.snapshots
  - lastgood.rollback.project
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Performs every verification and returns the full plan (tags to move, services to recreate).
  diff_mode:
    support: full
    details:
      - Shows the image ID each reference names before and after.
options:
  services:
    description:
      - Per service name the recorded C(image) reference and C(image_id), as in a snapshot manifest.
      - A service whose entry says C(running=false) (a one-shot job, a service stopped on purpose) and whose
        stopped container already has the recorded image is left stopped; without C(running) it counts as running.
      - When omitted, the module reads and verifies the snapshot O(snapshot_id) under O(backup_root) itself
        (manifest checksum, file copies, bad marker), which saves a separate M(lastgood.rollback.snapshot_info) call.
    type: dict
  snapshot_id:
    description:
      - Snapshot to restore when O(services) is omitted. Defaults to the last-known-good snapshot.
    type: str
  only:
    description:
      - Restrict the restore to these services. Unknown names are refused.
    type: list
    elements: str
  tag_replaced:
    description:
      - Keep the image being replaced under a C(rolled-back-<timestamp>) tag of its repository.
    type: bool
    default: true
  recreate:
    description:
      - Also recreate the services whose containers run another image than the record, and wait for them.
      - One module run instead of two on a rollback's critical path.
    type: bool
    default: false
  wait:
    description:
      - With O(recreate=true), wait until the recreated containers run and are healthy.
      - A caller that runs a health gate right after, which waits for the same containers, can skip this wait and
        let the container start while the gate starts.
    type: bool
    default: true
  wait_timeout:
    description:
      - With O(recreate=true) and O(wait=true), seconds the recreated containers get to run and be healthy.
    type: float
    default: 120
  stop_timeout:
    description:
      - With O(recreate=true), seconds each old container gets to stop (defaults to the service's C(stop_grace_period)).
    type: int
"""

EXAMPLES = r"""
- name: Read the last known good snapshot
  lastgood.rollback.snapshot_info:
    project_dir: /srv/shop
    require_images: true
  register: snapshot

- name: Put its images back under their references
  lastgood.rollback.compose_image_restore:
    project_dir: /srv/shop
    services: "{{ snapshot.manifest.services }}"
  register: restore

- name: Or in one step, from the last-known-good snapshot
  lastgood.rollback.compose_image_restore:
    project_dir: /srv/shop
    backup_root: /var/backups/lastgood
  register: restore

- name: Recreate only the services that run another image
  lastgood.rollback.compose_service:
    project_dir: /srv/shop
    services: "{{ restore.recreate }}"
    recreate: always
  when: restore.recreate | length > 0
"""

RETURN = r"""
snapshot_id:
  description: The snapshot read when O(services) was omitted, else null.
  returned: always
  type: str
project_name:
  description: The compose project name.
  returned: always
  type: str
services:
  description: Per restored service, what was (or would be) done.
  returned: always
  type: dict
  sample:
    app:
      image: lastgood-demo/app:latest
      before_image_id: sha256:9d1e...
      after_image_id: sha256:4f5e...
      retagged: true
      rolled_back_tag: lastgood-demo/app:rolled-back-20261130T091502Z
      container_image_ids: [sha256:9d1e...]
      needs_recreate: true
recreate:
  description:
    - Services whose containers do not run the recorded image, or that the record has running and that are
      stopped, in name order. With O(recreate=true) these are recreated.
  returned: always
  type: list
  elements: str
unchanged:
  description: Services whose reference and containers already match the record.
  returned: always
  type: list
  elements: str
not_in_snapshot:
  description: Services of the project that the record does not mention (left alone).
  returned: always
  type: list
  elements: str
recreated:
  description: With O(recreate=true), per recreated service the containers before and after (see M(lastgood.rollback.compose_service)).
  returned: when O(recreate=true) and a service was recreated
  type: dict
ready:
  description: With O(recreate=true), whether every recreated container runs and is healthy (null without O(wait)).
  returned: when O(recreate=true) and a service was recreated
  type: bool
wait_s:
  description: Seconds spent waiting for the recreated containers.
  returned: when O(recreate=true) and a service was recreated
  type: float
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import PROJECT_ARGUMENT_SPEC, load_project
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError, fail_step
from ansible_collections.lastgood.rollback.plugins.module_utils._images import restore_images
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    ManifestError,
    load_verified_snapshot,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import HOLDER_ARGUMENT_SPEC, lock_for_module


def main():
    argument_spec = dict(
        services=dict(type="dict"),
        **BACKUP_ROOT_ARGUMENT_SPEC,
        snapshot_id=dict(type="str"),
        only=dict(type="list", elements="str"),
        tag_replaced=dict(type="bool", default=True),
        recreate=dict(type="bool", default=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="float", default=120),
        stop_timeout=dict(type="int"),
    )
    argument_spec.update(PROJECT_ARGUMENT_SPEC)
    argument_spec.update(HOLDER_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[("services", "snapshot_id")])
    params = module.params

    project = load_project(module, params)
    lock_for_module(module, params["backup_root"], project.name, "compose_image_restore")
    snapshot_id = None
    recorded = params["services"]
    if recorded is None:
        try:
            snapshot_id, _directory, manifest = load_verified_snapshot(
                params["backup_root"], project.name, params["snapshot_id"])
        except ManifestError as exc:
            module.fail_json(msg=str(exc))
        recorded = manifest["services"]
    all_recorded = recorded
    if params["only"]:
        unknown = sorted(set(params["only"]) - set(recorded))
        if unknown:
            module.fail_json(msg="only names services the record does not have: %s" % ", ".join(unknown))
        recorded = {name: recorded[name] for name in params["only"]}

    try:
        result = restore_images(docker_client(module), project, recorded, all_recorded,
                                tag_replaced=params["tag_replaced"], recreate=params["recreate"], wait=params["wait"],
                                wait_timeout=params["wait_timeout"], stop_timeout=params["stop_timeout"],
                                check_mode=module.check_mode)
    except StepError as exc:
        fail_step(module, exc, snapshot_id=snapshot_id)
    module.exit_json(snapshot_id=snapshot_id, **result)


if __name__ == "__main__":
    main()
