#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_backup
short_description: Take a complete Redis RDB snapshot of a Docker Compose service and copy it with its sha256
version_added: 0.1.0
description:
  - Talks to the server only through the compose service - C(docker compose exec -T <service> redis-cli ...),
    run as an argument list. A password is passed as the environment variable C(REDISCLI_AUTH), by name
    (C(-e REDISCLI_AUTH)), so it never appears on a command line.
  - Runs C(BGSAVE SCHEDULE) (after waiting for a save already running) and polls C(INFO) with a deadline,
    backing off from 50 ms to 0.5 s, until that save has finished (C(rdb_bgsave_in_progress:0) and
    C(rdb_saves) grown, or C(LASTSAVE) changed before Redis 7) with C(rdb_last_bgsave_status:ok). No fixed sleeps.
  - The server's C(dir) must be on a volume or bind mount; the file (C(dir) + C(dbfilename) from C(CONFIG GET))
    is pinned with a hard link, copied on the host with its sha256 computed while writing, and checked for
    complete RDB framing.
  - The pinned file is checked with C(redis-check-rdb) inside the container (CRC64, structure) and its key count
    recorded exactly. Without C(redis-check-rdb) in the image, the count comes from C(INFO keyspace) when the save
    finished, exact only if nothing changed meanwhile (RV(keys_exact)).
  - Must run as root on the Docker host.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.project
  - lastgood.rollback.redis
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Reads the server's configuration and where its RDB file lies on the host, then returns the plan;
        runs no BGSAVE and writes nothing.
  diff_mode:
    support: none
options:
  dest:
    description:
      - Path of the RDB copy to write (mode C(0600)). Missing parent directories are created.
    type: path
    required: true
  timeout:
    description:
      - Deadline in seconds for the snapshot to complete.
    type: float
    default: 60
  force:
    description:
      - Replace O(dest) when it exists. Without it an existing O(dest) is refused.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Snapshot the cache before the deploy
  lastgood.rollback.redis_backup:
    project_dir: /srv/shop
    service: redis
    port: 6379
    dest: /var/backups/lastgood/shop/redis.rdb
  register: redis_backup

- name: With a password from the vault (never on a command line)
  lastgood.rollback.redis_backup:
    project_dir: /srv/shop
    service: sessions
    password: "{{ vault_sessions_redis_password }}"
    dest: /var/backups/lastgood/shop/sessions.rdb
"""

RETURN = r"""
service:
  description: The compose service.
  returned: always
  type: str
file:
  description: Path of the RDB copy (written, or that would be written in check mode).
  returned: always
  type: str
sha256:
  description: sha256 of the copy.
  returned: success and not in check mode
  type: str
size:
  description: Size of the copy in bytes.
  returned: success and not in check mode
  type: int
keys:
  description: Number of keys in the snapshot (all databases, keys with a TTL included).
  returned: success and not in check mode
  type: int
expires:
  description: Number of those keys that have a TTL.
  returned: success and not in check mode
  type: int
keys_exact:
  description: Whether RV(keys) is exactly the content of the file.
  returned: success and not in check mode
  type: bool
keys_source:
  description: Where RV(keys) comes from, V(redis-check-rdb) or V(info).
  returned: success and not in check mode
  type: str
keyspace:
  description: C(keys) and C(expires) per database (C(db0), ...) from C(INFO) when the save completed.
  returned: success and not in check mode
  type: dict
dir:
  description: The server's C(dir) inside the container.
  returned: always
  type: str
dbfilename:
  description: The server's C(dbfilename).
  returned: always
  type: str
host_path:
  description: Where the server's RDB file lies on the host.
  returned: in check mode
  type: str
appendonly:
  description: Whether the server has C(appendonly) on.
  returned: success
  type: bool
rdb_version:
  description: RDB format version of the file.
  returned: success and not in check mode
  type: int
redis_version:
  description: Version of the server.
  returned: success and not in check mode
  type: str
bgsave_wait_s:
  description: Seconds from the start until the snapshot was complete.
  returned: success and not in check mode
  type: float
created_at:
  description: ISO 8601 UTC time the backup started.
  returned: success and not in check mode
  type: str
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._outputs import checked_dest, exit_with_warnings
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import PROJECT_ARGUMENT_SPEC, load_project
from ansible_collections.lastgood.rollback.plugins.module_utils._redis import (
    REDIS_ARGUMENT_SPEC,
    RedisError,
    RedisService,
    backup_redis,
)


def main():
    argument_spec = dict(
        dest=dict(type="path", required=True),
        timeout=dict(type="float", default=60),
        force=dict(type="bool", default=False),
    )
    argument_spec.update(PROJECT_ARGUMENT_SPEC)
    argument_spec.update(REDIS_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    dest = checked_dest(module, params["dest"], params["force"], "RDB copy")
    project = load_project(module, params)
    connection = dict(port=params["port"], user=params["user"], password=params["password"])
    actions = ["BGSAVE in service %s and wait until it completes" % params["service"],
               "copy the RDB file to %s with its sha256" % dest]
    try:
        if module.check_mode:
            server = RedisService(module, project, params["service"], **connection)
            attrs = server.container()
            if not attrs or not (attrs.get("State") or {}).get("Running"):
                raise RedisError("service %s is not running: a snapshot needs the server" % params["service"])
            config = server.config()
            host_dir = server.host_dir(config["dir"], attrs)
            module.exit_json(changed=True, actions=actions, service=params["service"], file=dest, dir=config["dir"],
                             dbfilename=config["dbfilename"], host_path=os.path.join(host_dir, config["dbfilename"]),
                             appendonly=config.get("appendonly") == "yes")
        result = backup_redis(module, project, params["service"], dest, timeout=params["timeout"], **connection)
    except RedisError as exc:
        module.fail_json(msg=exc.msg, actions=actions, **exc.result)
    exit_with_warnings(module, result, changed=True, actions=actions)


if __name__ == "__main__":
    main()
