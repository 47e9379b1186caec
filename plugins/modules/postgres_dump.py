#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgres_dump
short_description: Dump a PostgreSQL database with its checksum, size and row counts
version_added: 0.1.0
description:
  - Runs the real C(pg_dump) (custom format, or the parallel directory format) as an argument list, directly
    against the server or inside the container of a compose service, see O(service).
  - Records what a restore needs to prove itself - the sha256 and size of the dump, the server version,
    the database size and the row count of every table.
  - The row counts are those of the dump. A C(REPEATABLE READ) transaction exports its snapshot
    (C(pg_export_snapshot)), C(pg_dump) runs with C(--snapshot) of it, and the same transaction counts
    every table while C(pg_dump) runs, so the counts cost little extra time.
  - The dump is written next to O(dest) and renamed into place once complete. An existing O(dest) is refused
    unless O(overwrite=true), so a good dump is never replaced by accident.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.postgres
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Connects and reports the database, the server version and the tables that would be dumped with their
        estimated row counts (from the planner statistics); writes nothing.
  diff_mode:
    support: none
options:
  dest:
    description:
      - Path of the dump on the managed host, a file for O(format=custom), a directory for O(format=directory).
      - Its parent directory must exist.
    type: path
    required: true
  format:
    description:
      - V(custom) is one file (C(pg_dump -Fc)). V(directory) is a directory with one file per table
        (C(pg_dump -Fd)) and can be dumped with several O(jobs).
    type: str
    choices: [custom, directory]
    default: custom
  jobs:
    description:
      - Parallel C(pg_dump) jobs; more than one needs O(format=directory).
    type: int
    default: 1
  compress:
    description:
      - gzip compression level, V(0) (none) to V(9). Default - C(pg_dump)'s own (6).
      - On a small machine gzip dominates the dump time; V(1) is much faster for a somewhat larger dump.
    type: int
  overwrite:
    description:
      - Replace an existing O(dest) (only after the new dump is complete).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Dump the shop database on this host before the deploy
  lastgood.rollback.postgres_dump:
    database: shop
    host: 127.0.0.1
    user: postgres
    password: "{{ vault_pg_password }}"
    dest: /var/backups/lastgood/shop-20261130T084512Z.dump
  register: shop_dump

- name: Dump the database of the compose stack's db service, fast compression
  lastgood.rollback.postgres_dump:
    project_dir: /srv/shop
    service: db
    database: app
    dest: /var/backups/lastgood/app.dump
    compress: 1

- name: Parallel directory-format dump
  lastgood.rollback.postgres_dump:
    database: shop
    dest: /var/backups/lastgood/shop.dir
    format: directory
    jobs: 2
  environment:
    PGPASSWORD: "{{ vault_pg_password }}"
"""

RETURN = r"""
dump:
  description:
    - What was dumped; pass it as O(lastgood.rollback.postgres_restore#module:recorded) to restore it.
    - In check mode only C(database), C(file), C(format), C(server_version), C(compress), C(jobs) and
      C(estimated_tables).
  returned: always
  type: dict
  contains:
    database:
      description: The database.
      type: str
      sample: shop
    file:
      description: Base name of the dump.
      type: str
      sample: shop-20261130T084512Z.dump
    format:
      description: V(custom) or V(directory).
      type: str
    sha256:
      description:
        - sha256 of the file; for a directory, sha256 of its C(sha256sum)-style listing
          (C(<sha256>  <name>) per file, sorted by name).
      type: str
      returned: success
    size:
      description: Bytes of the dump (all files of a directory).
      type: int
      returned: success
    server_version:
      description: Version of the server dumped.
      type: str
      sample: "15.18 (Debian 15.18-0+deb12u1)"
    database_size:
      description: C(pg_database_size) at the time of the dump, in bytes; a restore checks the disk has room for it.
      type: int
      returned: success
    tables:
      description: Row count of every table, keyed by C(schema.table) (quoted as PostgreSQL quotes identifiers).
      type: dict
      returned: success
      sample: {public.orders: 1400000, public.customers: 450000}
    estimated_tables:
      description: In check mode, the estimated row count of every table (planner statistics).
      type: dict
      returned: check mode
    dumped_at:
      description: ISO 8601 UTC time the snapshot of the dump was taken.
      type: str
      returned: success
    compress:
      description: The compression level asked for, null for C(pg_dump)'s default.
      type: int
    jobs:
      description: Parallel jobs (check mode).
      type: int
      returned: check mode
    timings:
      description: Seconds spent - C(pg_dump_s) (pg_dump with the counts running beside it), C(count_s), C(sha256_s), C(total_s).
      type: dict
      returned: success
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._postgres import (
    POSTGRES_ARGUMENT_SPEC,
    POSTGRES_REQUIRED_TOGETHER,
    PostgresError,
    dump_database,
    dump_plan,
    fail_postgres,
    require_psycopg2,
    target_from_params,
)


def main():
    argument_spec = dict(
        dest=dict(type="path", required=True),
        format=dict(type="str", default="custom", choices=["custom", "directory"]),
        jobs=dict(type="int", default=1),
        compress=dict(type="int"),
        overwrite=dict(type="bool", default=False),
    )
    argument_spec.update(POSTGRES_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, required_together=POSTGRES_REQUIRED_TOGETHER,
                           supports_check_mode=True)
    require_psycopg2(module)
    params = module.params
    options = dict(fmt=params["format"], jobs=params["jobs"], compress=params["compress"])
    try:
        target = target_from_params(module, params)
        if module.check_mode:
            dump = dump_plan(module, target, params["database"], params["dest"], **options)
        else:
            dump = dump_database(module, target, params["database"], params["dest"], overwrite=params["overwrite"],
                                 **options)
    except PostgresError as exc:
        fail_postgres(module, exc)
    verb = "would dump" if module.check_mode else "dumped"
    tables = dump.get("tables", dump.get("estimated_tables", {}))
    action = "%s database %s (%d tables) to %s" % (verb, params["database"], len(tables), params["dest"])
    module.exit_json(changed=True, dump=dump, actions=[action])


if __name__ == "__main__":
    main()
