#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: volume_restore
short_description: Put an archived named Docker volume back, stopping only its users for the swap
version_added: 0.1.0
description:
  - Restores an archive written by M(lastgood.rollback.volume_backup) into a named Docker volume.
  - Nothing changes until the archive is known to be good - its size and sha256 match the record, the whole
    archive reads without error (truncation, gzip damage), and every member passes the safe-extraction
    filter - no absolute paths, no C(..), nothing written through a symlink, no symlink or hard link that
    points outside the volume (symlinks are followed through the archive's own symlinks), no device nodes,
    FIFOs or other special files, no duplicate names.
  - The archive is extracted into C(_data.lgstage-<snapshot_id>), a directory beside the volume's data
    directory on the same filesystem, keeping numeric ownership and the full mode; the extracted tree must
    reproduce the recorded digest of every entry's metadata.
  - Only then are the running containers that mount the volume stopped; the data directory is renamed to
    C(_data.before-<snapshot_id>) (the safety copy) and the staging directory renamed into its place - a
    rename, never a copy; if that fails the first rename is undone. The containers are started again and
    RV(downtime) reports the window. The recorded paths must then be present.
  - A failure before the swap leaves the volume untouched and removes the staging directory.
  - When the volume already holds exactly the archive's content (same digest), nothing is done.
  - Only volumes of the C(local) driver without driver options are supported. Must run as root on the
    Docker host.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.lock
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Verifies the archive completely (size, sha256, every member) and compares it with the volume, then returns
        the plan; extracts, stops and renames nothing.
  diff_mode:
    support: partial
    details:
      - Shows the volume's entry count, size and tree digest before and after, not a per-file diff.
options:
  volume:
    description:
      - Name of the Docker volume to restore into (as C(docker volume ls) shows it). The volume must exist.
      - Must match C([A-Za-z0-9][A-Za-z0-9_.-]+) and contain no C(..); other names are refused before
        anything else happens.
    type: str
    required: true
  archive:
    description:
      - Path of the archive to restore.
    type: path
    required: true
  recorded:
    description:
      - What M(lastgood.rollback.volume_backup) returned for this archive (or the same keys from a snapshot manifest).
      - Its C(sha256) is required unless O(sha256) is given; C(size), C(tree_digest) and C(paths) are checked when present.
    type: dict
  sha256:
    description:
      - The expected sha256 of the archive; overrides C(sha256) of O(recorded).
    type: str
  snapshot_id:
    description:
      - Names the staging directory and the safety copy (C(_data.before-<snapshot_id>); a suffix C(-2), C(-3)...
        is added when that exists).
      - Defaults to the UTC time, C(YYYYmmddTHHMMSSZ). Must be a safe name (letters, digits, C(.), C(_), C(-)).
    type: str
  keep_previous:
    description:
      - Keep the previous content as C(_data.before-<snapshot_id>) beside the volume's data directory.
      - With V(false) it is removed once the restore succeeded; after a failure it is always kept.
    type: bool
    default: true
  force:
    description:
      - Restore even when the volume already holds the archive's content.
    type: bool
    default: false
  stop_timeout:
    description:
      - Seconds each container gets to stop before it is killed. Defaults to each container's own stop timeout.
    type: int
  backup_root:
    description:
      - Where the snapshots and the lock of the compose project O(project_name) live. Given, the module refuses
        while another live run holds that lock (see O(holder)), before anything else; the role
        C(lastgood.rollback.rollback_full) gives it. Omitted, the lock is not read.
    type: path
  project_name:
    description:
      - The compose project the volume belongs to, whose lock O(backup_root) holds. Required with O(backup_root).
    type: str
notes:
  - The safety copies stay inside the volume's directory and are removed with the volume; RV(previous_copies) lists them.
"""

EXAMPLES = r"""
- name: Back up the media volume
  lastgood.rollback.volume_backup:
    volume: shop_media
    dest: /var/backups/lastgood/shop/media.tar
  register: media_backup

- name: Later, put it back (only the containers that mount it are stopped, for the swap)
  lastgood.rollback.volume_restore:
    volume: shop_media
    archive: /var/backups/lastgood/shop/media.tar
    recorded: "{{ media_backup }}"
    snapshot_id: "20261130T084512Z"
    # Refused while another run (a deploy, a rollback) holds the project's lock.
    backup_root: /var/backups/lastgood
    project_name: shop

- name: Restore an archive known only by its checksum, dropping the previous content afterwards
  lastgood.rollback.volume_restore:
    volume: shop_media
    archive: /srv/restore/media.tar.gz
    sha256: 9f2c0e4b7d1a4c3e8b6f5a2d1c0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e
    keep_previous: false
"""

RETURN = r"""
volume:
  description: The volume name.
  returned: always
  type: str
mountpoint:
  description: The volume's data directory on the Docker host.
  returned: when the volume exists
  type: str
archive:
  description: The archive restored (or that would be).
  returned: always
  type: str
archive_entries:
  description: Number of entries in the archive, not counting its root.
  returned: when the archive was verified
  type: int
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
containers:
  description: The containers that mount the volume, with C(name), C(service), C(project) and C(state) before the restore.
  returned: when a restore was planned
  type: list
  elements: dict
containers_stopped:
  description: Names of the containers stopped for the swap and started again.
  returned: always
  type: list
  elements: str
downtime:
  description: C(down_at), C(up_at) and C(seconds) from the first stop to the last start; null when no container was stopped.
  returned: always
  type: dict
previous_path:
  description: Where the previous content is kept; null when it was removed or nothing was swapped.
  returned: always
  type: str
previous_copies:
  description: Every safety copy kept beside the volume's data directory.
  returned: when the volume exists
  type: list
  elements: str
missing_paths:
  description: Recorded paths absent after the restore (at most 50).
  returned: after a swap
  type: list
  elements: str
before:
  description: C(entries), C(bytes) and C(tree_digest) of the volume before.
  returned: when the archive was verified
  type: dict
after:
  description: C(entries), C(bytes) and C(tree_digest) of the archive, what the volume holds after.
  returned: when the archive was verified
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import compact_timestamp, utc_now
from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import HOLDER_ARGUMENT_SPEC, lock_for_module
from ansible_collections.lastgood.rollback.plugins.module_utils._volumes import (
    VolumeError,
    check_volume_name,
    restore_volume,
)


def summary_text(state):
    return "entries: %(entries)d\nbytes: %(bytes)d\ntree_digest: %(tree_digest)s\n" % state


def main():
    module = AnsibleModule(
        argument_spec=dict(
            volume=dict(type="str", required=True),
            archive=dict(type="path", required=True),
            recorded=dict(type="dict"),
            sha256=dict(type="str"),
            snapshot_id=dict(type="str"),
            keep_previous=dict(type="bool", default=True),
            force=dict(type="bool", default=False),
            stop_timeout=dict(type="int"),
            backup_root=dict(type="path"),
            project_name=dict(type="str"),
            **HOLDER_ARGUMENT_SPEC,
        ),
        required_one_of=[("recorded", "sha256")],
        required_by={"backup_root": "project_name"},
        supports_check_mode=True,
    )
    params = module.params
    if params["backup_root"]:
        lock_for_module(module, params["backup_root"], params["project_name"], "volume_restore")
    try:
        check_volume_name(params["volume"])
    except VolumeError as exc:
        module.fail_json(msg=exc.msg)
    recorded = dict(params["recorded"] or {})
    if params["sha256"]:
        recorded["sha256"] = params["sha256"].lower()
    snapshot_id = params["snapshot_id"] or compact_timestamp(utc_now())
    client = docker_client(module)
    try:
        result = restore_volume(module, client, None, params["volume"], params["archive"], recorded, snapshot_id,
                                keep_previous=params["keep_previous"], check_mode=module.check_mode,
                                stop_timeout=params["stop_timeout"], force=params["force"])
    except VolumeError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    if "before" in result and result["changed"]:
        result["diff"] = {"before": summary_text(result["before"]), "after": summary_text(result["after"]),
                          "before_header": "volume %s" % result["volume"], "after_header": params["archive"]}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
