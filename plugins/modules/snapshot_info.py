#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: snapshot_info
short_description: Find, verify and read a snapshot of a Docker Compose project
version_added: 0.1.0
description:
  - Resolves a snapshot id (by default the last-known-good snapshot), verifies the manifest against its
    sha256, optionally verifies the recorded configuration file copies and that every recorded image ID
    is still present in the local engine, and returns the manifest.
  - Meant as the preflight of every rollback, before anything changes; it fails with a one-line message
    on a missing, unsafe, damaged or bad-marked snapshot.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.snapshots
  - lastgood.rollback.project.LOOKUP
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
  - lastgood.rollback.attributes.INFO_MODULE
options:
  snapshot_id:
    description:
      - The snapshot to read. Defaults to the last-known-good snapshot.
    type: str
  verify_files:
    description:
      - Verify the sha256 of every recorded configuration file copy.
    type: bool
    default: true
  verify_artifacts:
    description:
      - Also verify the sha256 of every data artifact (database dumps, volume archives, the Redis file), reading
        each one completely. The full rollback tier does this before it stops anything.
    type: bool
    default: false
  require_images:
    description:
      - Fail unless every image ID the snapshot records is present in the local engine.
        All services are checked before failing, and the message names every missing one.
    type: bool
    default: false
  allow_bad:
    description:
      - Return a snapshot that was marked bad instead of failing.
    type: bool
    default: false
  list_snapshots:
    description:
      - Also return every snapshot of the project with its state.
    type: bool
    default: false
  compare_live:
    description:
      - Also compare the snapshot with what runs now (needs O(project_dir)) and return RV(differences).
    type: bool
    default: false
requirements:
  - The Docker SDK for Python (C(docker)) when O(require_images=true) or O(project_name) is not given.
"""

EXAMPLES = r"""
- name: Read and verify the last-known-good snapshot, with all its images present
  lastgood.rollback.snapshot_info:
    project_dir: /srv/shop
    require_images: true
  register: snapshot

- name: List every snapshot of the project
  lastgood.rollback.snapshot_info:
    project_name: shop
    snapshot_id: 20261130T084512Z
    list_snapshots: true
  register: all_snapshots
"""

RETURN = r"""
snapshot_id:
  description: The resolved snapshot id.
  returned: always
  type: str
  sample: 20261130T084512Z
snapshot_dir:
  description: Directory of the snapshot.
  returned: always
  type: str
project_name:
  description: The project the snapshot belongs to.
  returned: always
  type: str
manifest:
  description: The verified manifest (see M(lastgood.rollback.snapshot_create)).
  returned: always
  type: dict
last_known_good:
  description: Id the last-known-good pointer names, or null.
  returned: always
  type: str
is_last_known_good:
  description: Whether the resolved snapshot is the last known good one.
  returned: always
  type: bool
bad:
  description: The bad marker (C(reason), C(marked_at)) or null.
  returned: always
  type: dict
missing_images:
  description: Services whose recorded image ID is absent from the engine (with O(require_images)).
  returned: always
  type: list
  elements: str
differences:
  description: With O(compare_live), what differs between the live project and the snapshot.
  returned: when O(compare_live=true)
  type: dict
  contains:
    images:
      description: Services whose containers run another image than recorded, or that are gone.
      type: list
      elements: str
    services_added:
      description: Services of the project the snapshot does not know.
      type: list
      elements: str
    services_removed:
      description: Services of the snapshot the project no longer has (also listed in RV(differences.images)).
      type: list
      elements: str
    files:
      description: Recorded configuration files that changed or are missing.
      type: list
      elements: str
    git:
      description: C(recorded) and C(live) commit and C(dirty) when they differ, else null.
      type: dict
    any:
      description: Whether anything differs.
      type: bool
    summary:
      description: One line describing the differences.
      type: str
snapshots:
  description: With O(list_snapshots), every snapshot, oldest first, with C(id), C(last_known_good) and C(bad).
  returned: when O(list_snapshots=true)
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_LOOKUP_ARGUMENT_SPEC,
    PROJECT_LOOKUP_REQUIRED_ONE_OF,
    load_project,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client, image_id
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    ManifestError,
    is_bad,
    last_known_good,
    list_snapshots,
    load_verified_snapshot,
    project_root,
    read_bad_marker,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._snapshot_data import damaged_artifacts
from ansible_collections.lastgood.rollback.plugins.module_utils._state import compare_with_manifest


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **PROJECT_LOOKUP_ARGUMENT_SPEC,
            **BACKUP_ROOT_ARGUMENT_SPEC,
            snapshot_id=dict(type="str"),
            verify_files=dict(type="bool", default=True),
            verify_artifacts=dict(type="bool", default=False),
            require_images=dict(type="bool", default=False),
            allow_bad=dict(type="bool", default=False),
            list_snapshots=dict(type="bool", default=False),
            compare_live=dict(type="bool", default=False),
        ),
        required_one_of=PROJECT_LOOKUP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params = module.params
    if params["compare_live"] and not params["project_dir"]:
        module.fail_json(msg="compare_live needs project_dir")
    project = load_project(module, params) if params["project_dir"] else None
    project_name = params["project_name"] or project.name

    try:
        root = project_root(params["backup_root"], project_name)
        snapshot_id, path, manifest = load_verified_snapshot(
            params["backup_root"], project_name, params["snapshot_id"],
            check_files=params["verify_files"], allow_bad=params["allow_bad"])
    except ManifestError as exc:
        module.fail_json(msg=str(exc))

    if params["verify_artifacts"]:
        damaged = damaged_artifacts(path, manifest)
        if damaged:
            module.fail_json(msg="snapshot %s is damaged: data artifacts missing or not matching their sha256: %s"
                             % (snapshot_id, ", ".join(damaged)), damaged_artifacts=damaged)

    lkg = last_known_good(root)
    bad = read_bad_marker(path)
    result = dict(changed=False, snapshot_id=snapshot_id, snapshot_dir=path, project_name=project_name,
                  manifest=manifest, last_known_good=lkg, is_last_known_good=(lkg == snapshot_id),
                  bad=bad, missing_images=[])
    if params["list_snapshots"]:
        result["snapshots"] = [
            dict(id=s, last_known_good=(s == lkg), bad=is_bad(os.path.join(root, s)))
            for s in list_snapshots(root)
        ]
    client = docker_client(module) if (params["require_images"] or params["compare_live"]) else None
    if params["compare_live"]:
        result["differences"] = compare_with_manifest(module, project, client, manifest)
    if params["require_images"]:
        result["missing_images"] = sorted(
            name for name, entry in manifest["services"].items()
            if not entry.get("image_id") or image_id(client, entry["image_id"]) is None
        )
        if result["missing_images"]:
            module.fail_json(
                msg="snapshot %s cannot be restored: image(s) no longer present locally for %s"
                % (snapshot_id, ", ".join(
                    "%s (%s)" % (name, manifest["services"][name].get("image_id"))
                    for name in result["missing_images"])),
                **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
