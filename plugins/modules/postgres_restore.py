#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgres_restore
short_description: Restore a PostgreSQL database from a verified dump, keeping the current one until the new one is proven
version_added: 0.1.0
description:
  - Restores a dump made by M(lastgood.rollback.postgres_dump), directly or inside the container of a compose
    service (see O(service)), so that a damaged dump or a failed restore never costs the live database.
  - B(Before anything changes) - the archive's sha256 must equal the recorded one; C(pg_restore) must read the
    whole archive (C(pg_restore -f /dev/null); C(pg_restore --list) does not detect damage); the server must answer,
    no other restore of the database may be running (advisory lock), and the disk of the database must have room
    for a second copy (the recorded database size plus 15%, plus the WAL when it shares the disk). Without room the
    restore is refused, unless O(in_place_if_no_room=true).
  - B(Restore) - a scratch database C(lastgood_restore_<hash of the name>) is created with the owner, encoding,
    locale and tablespace of the live database, and C(pg_restore --exit-on-error) (O(jobs) in parallel) fills it.
    Its tables and their row counts must equal the recorded ones; it is analyzed (C(ANALYZE)) and given the live
    database's privileges and per-database settings.
  - B(Swap) - new connections to the live database are blocked (C(ALLOW_CONNECTIONS false)), its sessions are
    terminated (an idle transaction does not hold the restore up), and one transaction renames the live database
    to C(<database>_before_<snapshot_id>) (the safety copy) and the scratch database to C(<database>). The
    window without new connections is well under a second and reported as RV(swap_window_s).
  - B(On failure) of any step - the live database is untouched and accepts connections as before, the scratch
    database is dropped, and the module fails with one line saying what failed. A run that was killed leaves the
    scratch database behind; the next run drops it first (and unblocks the live database if the kill came during
    the swap).
  - B(In place) (O(in_place_if_no_room=true), used only when there is no room for a second copy) - a safety dump of
    the live database is taken into O(safety_dump_dir) and read back completely, the live database is dropped and
    restored as above; should that fail, the safety dump is restored the same way and the module fails.
  - The module always restores when it runs (C(changed=true)); whether a restore is needed is the caller's decision.
  - O(state=previous_dropped) drops the safety copies kept for O(snapshot_id) instead.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.lock
  - lastgood.rollback.postgres
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Verifies the archive (sha256 and complete read), the connection, the lock and the free space, and returns
        the RV(plan); creates, renames and drops nothing. A leftover scratch database is reported, not dropped.
  diff_mode:
    support: full
    details:
      - Before - the live database's tables with their estimated row counts; after - the recorded tables and row counts.
options:
  state:
    description:
      - V(restored) restores O(archive). V(previous_dropped) drops the safety copies of O(database) kept by
        restores of O(snapshot_id) (C(<database>_before_<snapshot_id>) and its C(_2), C(_3)... variants).
    type: str
    choices: [restored, previous_dropped]
    default: restored
  archive:
    description:
      - Path of the dump on the managed host (a file, or a directory for a directory-format dump).
      - Required with O(state=restored).
    type: path
  recorded:
    description:
      - What the dump recorded - the RV(lastgood.rollback.postgres_dump#module:dump) result of
        M(lastgood.rollback.postgres_dump), or the same dict from a snapshot manifest.
      - Used keys - C(sha256), C(tables), C(format), C(database_size).
      - Required with O(state=restored).
    type: dict
  snapshot_id:
    description:
      - Id of the snapshot being restored; names the safety copy C(<database>_before_<snapshot_id>). When that name
        is taken (the same snapshot restored twice), C(_2), C(_3)... is appended; an existing copy is never replaced.
      - Letters, digits, C(.), C(_) and C(-).
    type: str
    required: true
  jobs:
    description:
      - Parallel C(pg_restore) jobs, and sessions for the row counts.
    type: int
    default: 1
  keep_previous:
    description:
      - Keep the previous database as the safety copy. With V(false) it is dropped once the restored database serves.
    type: bool
    default: true
  in_place_if_no_room:
    description:
      - When the disk has no room for a second copy, restore in place after a verified safety dump instead of refusing.
      - The safety dump is taken after O(stop_services) stopped and before connections are blocked; what another client
        commits while it runs is not in it. Stop every writer with O(stop_services) when you rely on it.
    type: bool
    default: false
  space_check:
    description:
      - Refuse to restore when the free space of the database's disk cannot be measured or is too small.
      - The space is measured at the server's data directory (or the database's tablespace), which must be on the
        managed host in direct mode; in compose mode it is measured inside the container.
      - V(false) skips the refusal; a disk that fills up during the restore still leaves the live database untouched,
        but a full disk also stops the live database from writing until the scratch database is dropped.
    type: bool
    default: true
  safety_dump_dir:
    description:
      - Directory on the managed host for the safety dump of an in-place restore. Default - the directory of O(archive).
    type: path
  stop_services:
    description:
      - Compose services that use the database (its clients). They are stopped just before the live database goes
        away (the swap) and started again right after, also when the restore fails; the rest of the restore runs
        while they keep serving. Only those running (or restarting) are stopped; a paused one is left as it is. In
        check mode the plan names those that would be stopped.
    type: list
    elements: str
    default: []
  clients_project_dir:
    description:
      - The compose project of O(stop_services). Defaults to O(project_dir); needed with direct access, where
        O(project_dir) is not given.
    type: path
  backup_root:
    description:
      - Where the snapshots and the lock of the project O(project_name) live. Given, the module refuses while
        another live run holds that lock (see O(holder)); the role C(lastgood.rollback.restore_database) gives it.
        Omitted, the lock is not read.
    type: path
"""

EXAMPLES = r"""
- name: Dump before the deploy
  lastgood.rollback.postgres_dump:
    project_dir: /srv/shop
    service: db
    database: app
    dest: /var/backups/lastgood/app-20261130T084512Z.dump
  register: app_dump

- name: Roll the database back to that dump
  lastgood.rollback.postgres_restore:
    project_dir: /srv/shop
    service: db
    database: app
    archive: /var/backups/lastgood/app-20261130T084512Z.dump
    recorded: "{{ app_dump.dump }}"
    snapshot_id: 20261130T084512Z
    jobs: 2
  register: restored

- name: Show the plan only (verifies the archive, changes nothing)
  lastgood.rollback.postgres_restore:
    database: shop
    password: "{{ vault_pg_password }}"
    archive: /var/backups/lastgood/shop.dump
    recorded: "{{ manifest.postgres.shop }}"
    snapshot_id: 20261130T084512Z
  check_mode: true

- name: Drop the safety copy once the application is verified
  lastgood.rollback.postgres_restore:
    project_dir: /srv/shop
    service: db
    database: app
    snapshot_id: 20261130T084512Z
    state: previous_dropped
"""

RETURN = r"""
clients_stopped:
  description: With O(stop_services), the services that were running and were stopped around the swap.
  returned: when O(stop_services) is given and not in check mode
  type: list
  elements: str
clients_downtime_s:
  description: Seconds from stopping the clients to having them running again.
  returned: when clients were stopped
  type: float
plan:
  description: The steps of the restore, in order (also in check mode).
  returned: when O(state=restored)
  type: list
  elements: str
  sample:
    - verify the sha256 of /var/backups/lastgood/app.dump against the recorded 3f2a9c0d11e4...
    - read the whole archive (pg_restore -f /dev/null) to prove it complete
    - "room for a second copy: 1.2 GiB needed, 61.3 GiB free"
    - create the scratch database lastgood_restore_5d41402abc4b with the owner, encoding, locale and tablespace of "app"
    - restore the archive into lastgood_restore_5d41402abc4b (pg_restore --exit-on-error --jobs=2)
    - "verify lastgood_restore_5d41402abc4b: 4 tables with the recorded row counts; ANALYZE"
    - copy the privileges and settings of "app" to lastgood_restore_5d41402abc4b
    - block new connections to "app", terminate its sessions, rename "app" to "app_before_20261130T084512Z" and ...
    - keep "app_before_20261130T084512Z" as the safety copy until it is dropped
actions:
  description: What was done (in check mode, what was verified).
  returned: always
  type: list
  elements: str
database:
  description: The restored database.
  returned: when O(state=restored)
  type: str
snapshot_id:
  description: The snapshot restored.
  returned: when O(state=restored)
  type: str
scratch:
  description: Name of the scratch database.
  returned: when O(state=restored)
  type: str
safety_copy:
  description: Name of the previous database, kept (null when there was none or O(keep_previous=false)).
  returned: when O(state=restored)
  type: str
  sample: app_before_20261130T084512Z
in_place:
  description: Whether the restore was (or would be) done in place.
  returned: when O(state=restored)
  type: bool
safety_dump:
  description: The safety dump of an in-place restore (the fields of a dump, and its C(path)).
  returned: when O(state=restored)
  type: dict
archive:
  description: The archive verified - C(path), C(format), C(sha256), C(size).
  returned: when the archive was read
  type: dict
space:
  description:
    - The free space check - C(checked), C(path), C(available) (including a leftover scratch database that is dropped
      first, C(leftover_scratch)), C(needed), C(database_size), C(tablespace), C(wal_on_same_filesystem).
  returned: when O(state=restored)
  type: dict
tables:
  description: Row count of every table of the restored database, as verified.
  returned: success, not in check mode
  type: dict
terminated_sessions:
  description: Sessions of the live database terminated at the swap.
  returned: when O(state=restored)
  type: int
swap_window_s:
  description: Seconds from blocking new connections to the restored database serving (server clock).
  returned: success, not in check mode, when a previous database existed and not in place
  type: float
leftovers_dropped:
  description: Scratch databases of interrupted runs that were dropped.
  returned: when O(state=restored)
  type: list
  elements: str
server_version:
  description: Version of the server.
  returned: when O(state=restored)
  type: str
timings:
  description:
    - Seconds per step - C(sha256_s) and C(full_read_s) (run side by side, C(verify_archive_s) together),
      C(restore_s), C(verify_s) (row counts and ANALYZE), C(swap_s), C(safety_dump_s), C(total_s).
  returned: when O(state=restored)
  type: dict
dropped:
  description: With O(state=previous_dropped), the safety copies dropped (or that would be).
  returned: when O(state=previous_dropped)
  type: list
  elements: str
cmd:
  description: The command that failed.
  returned: failure of a command
  type: list
  elements: str
rc:
  description: Its exit code (negative - killed by that signal).
  returned: failure of a command
  type: int
stderr:
  description: Its error output (the password, if any, masked).
  returned: failure of a command
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils import _services
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import ComposeError, ComposeProject, fail_compose
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import APIError, docker_client, one_line
from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import HOLDER_ARGUMENT_SPEC, lock_for_module
from ansible_collections.lastgood.rollback.plugins.module_utils._postgres import (
    POSTGRES_ARGUMENT_SPEC,
    POSTGRES_REQUIRED_TOGETHER,
    PostgresError,
    drop_previous,
    fail_postgres,
    require_psycopg2,
    restore_database,
    target_from_params,
)


def main():
    argument_spec = dict(
        state=dict(type="str", default="restored", choices=["restored", "previous_dropped"]),
        archive=dict(type="path"),
        recorded=dict(type="dict"),
        snapshot_id=dict(type="str", required=True),
        jobs=dict(type="int", default=1),
        keep_previous=dict(type="bool", default=True),
        in_place_if_no_room=dict(type="bool", default=False),
        space_check=dict(type="bool", default=True),
        safety_dump_dir=dict(type="path"),
        stop_services=dict(type="list", elements="str", default=[]),
        clients_project_dir=dict(type="path"),
        backup_root=dict(type="path"),
        **HOLDER_ARGUMENT_SPEC,
    )
    argument_spec.update(POSTGRES_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, required_together=POSTGRES_REQUIRED_TOGETHER,
                           required_if=[("state", "restored", ("archive", "recorded"))],
                           required_by={"backup_root": "project_name"}, supports_check_mode=True)
    require_psycopg2(module)
    params = module.params
    if params["backup_root"]:
        lock_for_module(module, params["backup_root"], params["project_name"], "postgres_restore")
    around_swap = None
    clients = {}
    if params["stop_services"]:
        around_swap = clients_control(module, params, clients)
    try:
        target = target_from_params(module, params)
        if params["state"] == "previous_dropped":
            result = drop_previous(module, target, params["database"], params["snapshot_id"],
                                   check_mode=module.check_mode)
        else:
            result = restore_database(
                module, target, params["database"], params["archive"], params["recorded"], params["snapshot_id"],
                jobs=params["jobs"], keep_previous=params["keep_previous"], check_mode=module.check_mode,
                in_place_if_no_room=params["in_place_if_no_room"], space_check=params["space_check"],
                safety_dump_dir=params["safety_dump_dir"], around_swap=around_swap)
    except PostgresError as exc:
        fail_postgres(module, exc, **clients)
    except ComposeError as exc:
        fail_compose(module, exc, **clients)
    if module.check_mode and "clients_to_stop" in clients:
        running = clients.pop("clients_to_stop")
        result["actions"] = list(result.get("actions") or []) + [
            ("stop %s just before the swap and start them right after" % ", ".join(running)) if running
            else "no client to stop: none of %s is running" % ", ".join(params["stop_services"])]
    result.update(clients)
    module.exit_json(**result)


def clients_control(module, params, report):
    """The context manager factory that stops the client services only around the swap.

    In check mode, None; `report` receives `clients_to_stop`, those that would be stopped.
    """
    project_dir = params["clients_project_dir"] or params["project_dir"]
    if not project_dir:
        module.fail_json(msg="stop_services needs clients_project_dir (or project_dir) to find the compose project")
    project = ComposeProject(module, project_dir, params["files"], params["project_name"])
    try:
        unknown = sorted(set(params["stop_services"]) - set(project.services))
    except ComposeError as exc:
        fail_compose(module, exc)
    if unknown:
        module.fail_json(msg="stop_services names services not in project %s: %s" % (project.name, ", ".join(unknown)))
    client = docker_client(module)
    if module.check_mode:
        try:
            report["clients_to_stop"] = _services.to_stop(project, client, params["stop_services"],
                                                          states=_services.CLIENT_STATES)
        except ComposeError as exc:
            fail_compose(module, exc)
        except APIError as exc:
            module.fail_json(msg="cannot list the containers of project %s: %s" % (project.name, one_line(exc)))
        return None
    return lambda: _services.stopped_while(project, client, params["stop_services"], report)


if __name__ == "__main__":
    main()
