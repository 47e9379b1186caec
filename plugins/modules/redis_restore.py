#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_restore
short_description: Put a Redis RDB snapshot back into a Docker Compose service and verify its key count
version_added: 0.1.0
description:
  - Restores an RDB file written by M(lastgood.rollback.redis_backup).
  - Nothing changes until the file is known to be good - its size and sha256 match the record and it is framed
    as a complete RDB file. The file is then staged beside the live one (same owner and mode). A running server
    checks the staged file with its own C(redis-check-rdb) before it is stopped - an RDB version newer than it
    reads, or a bad checksum, is refused with the stage removed and nothing else changed (skipped when the image
    has no C(redis-check-rdb)).
  - The service is stopped (C(docker compose stop); a server with save points writes a last snapshot while
    shutting down, which becomes part of the safety copy), the live RDB file is renamed to
    C(<dbfilename>.before-<snapshot_id>) and the staged file renamed into its place, the service is started
    (C(docker compose start)) and C(INFO) is polled with a deadline until C(loading:0).
  - With C(appendonly yes) Redis would load its AOF and ignore the restored RDB. For Redis 7 and later (multi-part
    AOF) the AOF directory is set aside as C(<appenddirname>.before-<snapshot_id>) and replaced by one whose base
    is the restored snapshot (with an empty increment and a manifest). An older server with AOF on is refused.
  - Then the keys the server loaded (C(rdb_last_load_keys_loaded) plus C(rdb_last_load_keys_expired), Redis 7+)
    must equal the recorded key count; otherwise the module fails and the safety copy is kept.
  - The server's C(dir) must be on a volume or bind mount. When the service is not running, C(dir) and
    C(dbfilename) come from O(recorded) (defaults C(/data) and C(dump.rdb)) and AOF is taken to be on when its
    directory exists; the service is started at the end all the same, since the keys can only be counted by a
    running server.
  - When the server runs on exactly this file (same sha256) and nothing changed since it was loaded or saved,
    nothing is done.
  - Must run as root on the Docker host.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.lock
  - lastgood.rollback.project
  - lastgood.rollback.redis
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Verifies the file and reads the server's configuration, then returns the plan; stops, writes and renames nothing.
  diff_mode:
    support: none
options:
  archive:
    description:
      - Path of the RDB file to restore.
    type: path
    required: true
  recorded:
    description:
      - What M(lastgood.rollback.redis_backup) returned for this file (or the same keys from a snapshot manifest).
      - Its C(sha256) is required unless O(sha256) is given; C(size), C(keys), C(keys_exact), C(expires), C(dir) and
        C(dbfilename) are used when present.
    type: dict
  sha256:
    description:
      - The expected sha256 of O(archive); overrides C(sha256) of O(recorded).
    type: str
  keys:
    description:
      - The expected number of keys; overrides C(keys) of O(recorded).
    type: int
  snapshot_id:
    description:
      - Names the staged file and the safety copies (C(<dbfilename>.before-<snapshot_id>); a suffix C(-2), C(-3)...
        is added when that exists).
      - Defaults to the UTC time, C(YYYYmmddTHHMMSSZ). Must be a safe name (letters, digits, C(.), C(_), C(-)).
    type: str
  keep_previous:
    description:
      - Keep the safety copies of the previous RDB file (and AOF directory).
      - With V(false) they are removed once the restore succeeded; after a failure they are always kept.
    type: bool
    default: true
  force:
    description:
      - Restore even when the server already runs on this file.
    type: bool
    default: false
  timeout:
    description:
      - Deadline in seconds for the server to be back and done loading.
    type: float
    default: 60
  stop_timeout:
    description:
      - Seconds the server gets to stop before it is killed (C(docker compose stop --timeout)).
      - Defaults to the service's C(stop_grace_period).
    type: int
  backup_root:
    description:
      - Where the snapshots and the lock of the project live. Given, the module refuses while another live run
        holds that lock (see O(holder)), before it touches the server; the role C(lastgood.rollback.rollback_full) gives it.
        Omitted, the lock is not read.
    type: path
"""

EXAMPLES = r"""
- name: Snapshot the cache
  lastgood.rollback.redis_backup:
    project_dir: /srv/shop
    service: redis
    dest: /var/backups/lastgood/shop/redis.rdb
  register: redis_backup

- name: Put it back and check that every key is there again
  lastgood.rollback.redis_restore:
    project_dir: /srv/shop
    service: redis
    archive: /var/backups/lastgood/shop/redis.rdb
    recorded: "{{ redis_backup }}"
    # Refused while another run (a deploy, a rollback) holds the project's lock.
    backup_root: /var/backups/lastgood
"""

RETURN = r"""
service:
  description: The compose service.
  returned: always
  type: str
archive:
  description: The RDB file restored (or that would be).
  returned: always
  type: str
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
dir:
  description: The server's C(dir) inside the container.
  returned: when the file was verified
  type: str
dbfilename:
  description: The server's C(dbfilename).
  returned: when the file was verified
  type: str
host_path:
  description: The live RDB file on the host.
  returned: when the file was verified
  type: str
appendonly:
  description: Whether AOF is on (and its directory was replaced as well).
  returned: when the file was verified
  type: bool
previous:
  description: The safety copies kept (previous RDB file, previous AOF directory).
  returned: always
  type: list
  elements: str
downtime:
  description: C(down_at), C(up_at) and C(seconds) from stopping the service until it had loaded the snapshot.
  returned: always
  type: dict
keys_loaded:
  description: Keys the server loaded from the file (C(rdb_last_load_keys_loaded); before Redis 7 the keys present).
  returned: after a restore
  type: int
keys_expired_at_load:
  description: Keys of the file skipped at load because their TTL had passed.
  returned: after a restore
  type: int
keys_verified:
  description: Whether the loaded keys equal an exact recorded count.
  returned: after a restore
  type: bool
keys:
  description: Keys present after the restore (all databases).
  returned: after a restore
  type: int
expires:
  description: Keys with a TTL present after the restore.
  returned: after a restore
  type: int
keyspace:
  description: C(keys) and C(expires) per database after the restore.
  returned: after a restore
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import PROJECT_ARGUMENT_SPEC, load_project
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import compact_timestamp, utc_now
from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import HOLDER_ARGUMENT_SPEC, lock_for_module
from ansible_collections.lastgood.rollback.plugins.module_utils._redis import (
    REDIS_ARGUMENT_SPEC,
    RedisError,
    restore_redis,
)


def main():
    argument_spec = dict(
        archive=dict(type="path", required=True),
        recorded=dict(type="dict"),
        sha256=dict(type="str"),
        keys=dict(type="int", no_log=False),
        snapshot_id=dict(type="str"),
        keep_previous=dict(type="bool", default=True),
        force=dict(type="bool", default=False),
        timeout=dict(type="float", default=60),
        stop_timeout=dict(type="int"),
        backup_root=dict(type="path"),
        **HOLDER_ARGUMENT_SPEC,
    )
    argument_spec.update(PROJECT_ARGUMENT_SPEC)
    argument_spec.update(REDIS_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, required_one_of=[("recorded", "sha256")],
                           supports_check_mode=True)
    params = module.params
    recorded = dict(params["recorded"] or {})
    if params["sha256"]:
        recorded["sha256"] = params["sha256"].lower()
    if params["keys"] is not None:
        recorded["keys"] = params["keys"]
        recorded["keys_exact"] = True
    project = load_project(module, params)
    if params["backup_root"]:
        lock_for_module(module, params["backup_root"], project.name, "redis_restore")
    try:
        result = restore_redis(module, project, params["service"], params["archive"], recorded,
                               check_mode=module.check_mode, timeout=params["timeout"], port=params["port"],
                               user=params["user"], password=params["password"],
                               snapshot_id=params["snapshot_id"] or compact_timestamp(utc_now()),
                               keep_previous=params["keep_previous"], force=params["force"],
                               stop_timeout=params["stop_timeout"])
    except RedisError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
