#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: volume_backup
short_description: Archive a named Docker volume with its sha256 and a record of its files
version_added: 0.1.0
description:
  - Streams the content of a named Docker volume (its data directory on the Docker host) into a tar
    archive (PAX format, optionally gzip), computing the sha256 of the archive while it is written. The
    archive is written beside O(dest) and renamed into place when complete, with mode C(0600).
  - Keeps numeric ownership (uid/gid), the full mode (including setuid, setgid and sticky bits),
    modification times (whole seconds), symlinks and hard links. Sockets, FIFOs and device nodes are not
    archived (a restore refuses them); they are listed in RV(skipped) with a warning.
  - Records what a restore verifies later - counts, an order-independent digest of every entry's
    metadata (RV(tree_digest)) and a sample of the paths (RV(paths)) - see M(lastgood.rollback.volume_restore).
  - By default the containers using the volume keep running, and a warning says that a live volume may be
    archived in an inconsistent state; O(quiesce) pauses or stops them for the time of the backup.
  - Only volumes of the C(local) driver without driver options are supported. Must run as root on the
    Docker host.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Checks the name, that the volume exists and which containers use it, and returns the plan;
        writes, pauses and stops nothing.
  diff_mode:
    support: none
options:
  volume:
    description:
      - Name of the Docker volume (as C(docker volume ls) shows it, for example C(shop_media)).
      - Must match C([A-Za-z0-9][A-Za-z0-9_.-]+) and contain no C(..); other names are refused before
        anything else happens.
    type: str
    required: true
  dest:
    description:
      - Path of the archive to write. Missing parent directories are created (mode C(0750)).
    type: path
    required: true
  compress:
    description:
      - Compress the archive with gzip.
    type: bool
    default: false
  quiesce:
    description:
      - What to do with the running containers that mount the volume while it is archived.
      - V(none) leaves them running (a warning is returned when there are any).
      - V(pause) freezes them (C(docker pause)) and V(stop) stops them; both bring them back afterwards,
        also when the backup fails, and RV(downtime) reports the window.
    type: str
    choices: [none, pause, stop]
    default: none
  stop_timeout:
    description:
      - With O(quiesce=stop), seconds each container gets to stop before it is killed.
      - Defaults to each container's own stop timeout.
    type: int
  force:
    description:
      - Replace O(dest) when it exists. Without it an existing O(dest) is refused.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Archive the media volume while the application keeps running
  lastgood.rollback.volume_backup:
    volume: shop_media
    dest: /var/backups/lastgood/shop/media.tar.gz
    compress: true
  register: media_backup

- name: Archive the uploads volume with its users stopped for a consistent copy
  lastgood.rollback.volume_backup:
    volume: shop_uploads
    dest: /var/backups/lastgood/shop/uploads.tar
    quiesce: stop
"""

RETURN = r"""
volume:
  description: The volume name.
  returned: always
  type: str
  sample: shop_media
mountpoint:
  description: The volume's data directory on the Docker host.
  returned: always
  type: str
  sample: /var/lib/docker/volumes/shop_media/_data
file:
  description: Path of the archive (written, or that would be written in check mode).
  returned: always
  type: str
sha256:
  description: sha256 of the archive file.
  returned: success and not in check mode
  type: str
size:
  description: Size of the archive file in bytes.
  returned: success and not in check mode
  type: int
compression:
  description: V(gzip) or V(none).
  returned: always
  type: str
entries:
  description: Number of archived entries (files, directories, symlinks, hard links), not counting the volume root.
  returned: success and not in check mode
  type: int
files:
  description: Number of regular files (hard links not counted).
  returned: success and not in check mode
  type: int
dirs:
  description: Number of directories, not counting the volume root.
  returned: success and not in check mode
  type: int
symlinks:
  description: Number of symlinks.
  returned: success and not in check mode
  type: int
hardlinks:
  description: Number of additional hard links to files archived before them.
  returned: success and not in check mode
  type: int
bytes:
  description: Total size of the regular files.
  returned: success and not in check mode
  type: int
tree_digest:
  description:
    - Digest of every entry's type, path, mode, uid, gid, size, mtime and link target, independent of their order
      (sum modulo 2**256 of one sha256 per entry). A restore requires the extracted tree to reproduce it.
  returned: success and not in check mode
  type: str
paths:
  description:
    - Relative paths that a restore checks for once the services run again. All paths when there are at most 500
      entries, otherwise a reproducible uniform sample of 500 (see RV(paths_complete)).
  returned: success and not in check mode
  type: list
  elements: str
paths_complete:
  description: Whether RV(paths) lists every entry.
  returned: success and not in check mode
  type: bool
skipped:
  description: Entries not archived (sockets, FIFOs, device nodes, files that vanished during the backup), at most 100.
  returned: success and not in check mode
  type: list
  elements: str
created_at:
  description: ISO 8601 UTC time the backup started.
  returned: success and not in check mode
  type: str
duration_s:
  description: Seconds the backup took.
  returned: success and not in check mode
  type: float
quiesce:
  description: The O(quiesce) used.
  returned: always
  type: str
containers:
  description: The containers that mount the volume, with C(name), C(service), C(project) and C(state).
  returned: always
  type: list
  elements: dict
downtime:
  description: C(down_at), C(up_at) and C(seconds) of the pause or stop window; null when nothing was paused or stopped.
  returned: success and not in check mode
  type: dict
format:
  description: Format tag of the archive and its record, C(lastgood-volume-tar/1).
  returned: success and not in check mode
  type: str
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._outputs import checked_dest, exit_with_warnings
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client
from ansible_collections.lastgood.rollback.plugins.module_utils._volumes import (
    VolumeError,
    backup_volume,
    check_volume_name,
    inspect_volume,
    volume_containers,
)


def plan(params, vol, owners):
    running = [c["name"] for c in owners if c["state"] == "running"]
    actions = []
    if params["quiesce"] != "none" and running:
        actions.append("%s container(s) %s" % (params["quiesce"], ", ".join(running)))
    actions.append("archive %s (%s) to %s" % (vol["name"], vol["mountpoint"], params["dest"])
                   + (" with gzip" if params["compress"] else ""))
    if params["quiesce"] != "none" and running:
        actions.append("%s container(s) %s" % ("unpause" if params["quiesce"] == "pause" else "start", ", ".join(running)))
    return actions


def main():
    module = AnsibleModule(
        argument_spec=dict(
            volume=dict(type="str", required=True),
            dest=dict(type="path", required=True),
            compress=dict(type="bool", default=False),
            quiesce=dict(type="str", default="none", choices=["none", "pause", "stop"]),
            stop_timeout=dict(type="int"),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        check_volume_name(params["volume"])
    except VolumeError as exc:
        module.fail_json(msg=exc.msg)
    dest = checked_dest(module, params["dest"], params["force"], "archive file")
    client = docker_client(module)
    try:
        vol = inspect_volume(client, params["volume"])
        owners = volume_containers(client, params["volume"])
    except VolumeError as exc:
        module.fail_json(msg=exc.msg)
    containers = [{"name": c["name"], "service": c["service"], "project": c["project"], "state": c["state"]}
                  for c in owners]
    actions = plan(dict(params, dest=dest), vol, owners)
    if module.check_mode:
        module.exit_json(changed=True, actions=actions, volume=vol["name"], mountpoint=vol["mountpoint"], file=dest,
                         compression="gzip" if params["compress"] else "none", quiesce=params["quiesce"],
                         containers=containers)
    try:
        result = backup_volume(module, client, params["volume"], dest, compress=params["compress"],
                               quiesce=params["quiesce"], stop_timeout=params["stop_timeout"])
    except VolumeError as exc:
        module.fail_json(msg=exc.msg, actions=actions, **exc.result)
    exit_with_warnings(module, result, changed=True, actions=actions)


if __name__ == "__main__":
    main()
