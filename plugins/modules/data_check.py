#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: data_check
short_description: Check databases and volumes against what a snapshot recorded
version_added: 0.1.0
description:
  - For each database, connects (directly, or through the compose service as the snapshot recorded), checks that
    every table the snapshot recorded is present and that its row count is within bounds - by default at least
    O(min_row_ratio) of the recorded count, or the bounds given in O(row_bounds).
  - For each volume, checks that the files the snapshot recorded (a sample of up to 500 paths) are present.
  - Read-only. Reports every problem at once; whether a problem fails the task is O(fail_on_problem).
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
  - lastgood.rollback.attributes.INFO_MODULE
options:
  project_dir:
    description:
      - The compose project directory, for databases the snapshot reached through a compose service.
    type: path
  files:
    description:
      - Compose files relative to O(project_dir).
    type: list
    elements: str
  project_name:
    description:
      - The compose project name.
    type: str
  databases:
    description:
      - The snapshot manifest's C(databases) mapping (per database C(access) and C(tables)).
    type: dict
    default: {}
  passwords:
    description:
      - Passwords by database name, for direct access (the manifest never keeps one). Default C(PGPASSWORD).
    type: dict
    default: {}
  min_row_ratio:
    description:
      - A table passes when it holds at least this fraction of the rows the snapshot recorded (rounded down).
    type: float
    default: 1.0
  max_row_ratio:
    description:
      - When set, a table fails when it holds more than this multiple of the recorded rows.
    type: float
  row_bounds:
    description:
      - Explicit C({min, max}) per C(schema.table), overriding the ratios for that table.
    type: dict
    default: {}
  volumes:
    description:
      - The snapshot manifest's C(volumes) mapping (per volume the recorded C(paths)).
    type: dict
    default: {}
  fail_on_problem:
    description:
      - Fail the task when any check finds a problem.
    type: bool
    default: true
requirements:
  - C(psycopg2) for databases, the Docker SDK for Python for volumes.
"""

EXAMPLES = r"""
- name: Read the last known good snapshot
  lastgood.rollback.snapshot_info:
    project_dir: /srv/shop
  register: snapshot

- name: Tables present, no table lost more than 10% of its rows, volume files present
  lastgood.rollback.data_check:
    project_dir: /srv/shop
    databases: "{{ snapshot.manifest.databases }}"
    volumes: "{{ snapshot.manifest.volumes }}"
    min_row_ratio: 0.9
"""

RETURN = r"""
ok:
  description: Whether every database and volume check passed.
  returned: always
  type: bool
databases:
  description: Per database C(ok), C(error), C(missing_tables) and C(out_of_bounds) (per table C(rows), C(min), C(max)).
  returned: always
  type: dict
volumes:
  description: Per volume C(ok), C(error) and C(missing_paths).
  returned: always
  type: dict
msg:
  description: One line summing the checks up.
  returned: always
  type: str
"""

import math
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils import _postgres, _volumes
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import PROJECT_LOOKUP_ARGUMENT_SPEC
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client


def table_bounds(params, table, recorded_rows):
    explicit = params["row_bounds"].get(table)
    if explicit:
        return explicit.get("min"), explicit.get("max")
    low = int(math.floor(recorded_rows * params["min_row_ratio"]))
    high = int(math.ceil(recorded_rows * params["max_row_ratio"])) if params["max_row_ratio"] is not None else None
    return low, high


def check_database(module, params, name, recorded):
    access = recorded.get("access") or {}
    target_params = dict(database=name, host=access.get("host"), port=access.get("port") or 5432,
                         user=access.get("user") or "postgres", password=params["passwords"].get(name) or os.environ.get("PGPASSWORD"),
                         maintenance_db="postgres", connect_timeout=10)
    if access.get("service"):
        target_params.update(service=access["service"], project_dir=params["project_dir"], files=params["files"],
                             project_name=params["project_name"])
    report = dict(ok=False, error=None, missing_tables=[], out_of_bounds={})
    session = None
    try:
        target = _postgres.target_from_params(module, target_params)
        session = target.session(name)
        present = {"%s.%s" % (row[0], row[1]): (row[0], row[1]) for row in _postgres.user_tables(session)}
        for table, rows in sorted((recorded.get("tables") or {}).items()):
            if table not in present:
                report["missing_tables"].append(table)
                continue
            low, high = table_bounds(params, table, int(rows))
            count = int(session.run(_postgres.count_statement(*present[table]))[0][0])
            if (low is not None and count < low) or (high is not None and count > high):
                report["out_of_bounds"][table] = dict(rows=count, recorded=int(rows), min=low, max=high)
    except _postgres.PostgresError as exc:
        report["error"] = exc.msg
    finally:
        if session is not None:
            session.close()
    report["ok"] = not (report["error"] or report["missing_tables"] or report["out_of_bounds"])
    return report


def check_volume(client, name, recorded):
    report = dict(ok=False, error=None, missing_paths=[])
    try:
        root = _volumes.inspect_volume(client, name)["mountpoint"]
    except _volumes.VolumeError as exc:
        report["error"] = exc.msg
        return report
    for rel in recorded.get("paths") or []:
        if rel in (".", "") or os.path.lexists(os.path.join(root, rel)):
            continue
        report["missing_paths"].append(rel)
    report["ok"] = not report["missing_paths"]
    return report


def problem_lines(kind, reports):
    lines = []
    for name, report in sorted(reports.items()):
        if report["ok"]:
            continue
        parts = [report["error"]] if report.get("error") else []
        if report.get("missing_tables"):
            parts.append("missing tables %s" % ", ".join(report["missing_tables"]))
        for table, info in sorted((report.get("out_of_bounds") or {}).items()):
            parts.append("%s has %d rows (bounds %s..%s, recorded %d)" % (
                table, info["rows"], info["min"], "" if info["max"] is None else info["max"], info["recorded"]))
        if report.get("missing_paths"):
            parts.append("%d recorded files missing (%s)" % (len(report["missing_paths"]), ", ".join(report["missing_paths"][:3])))
        lines.append("%s %s: %s" % (kind, name, "; ".join(parts)))
    return lines


def main():
    argument_spec = dict(
        databases=dict(type="dict", default={}),
        passwords=dict(type="dict", default={}, no_log=True),
        min_row_ratio=dict(type="float", default=1.0),
        max_row_ratio=dict(type="float"),
        row_bounds=dict(type="dict", default={}),
        volumes=dict(type="dict", default={}),
        fail_on_problem=dict(type="bool", default=True),
    )
    argument_spec.update(PROJECT_LOOKUP_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if params["databases"]:
        _postgres.require_psycopg2(module)
    for password in params["passwords"].values():
        module.no_log_values.add(str(password))

    databases = {name: check_database(module, params, name, recorded or {})
                 for name, recorded in sorted(params["databases"].items())}
    volumes = {}
    if params["volumes"]:
        client = docker_client(module)
        volumes = {name: check_volume(client, name, recorded or {}) for name, recorded in sorted(params["volumes"].items())}
    problems = problem_lines("database", databases) + problem_lines("volume", volumes)
    ok = not problems
    msg = ("data ok: %d database(s), %d volume(s)" % (len(databases), len(volumes))) if ok else "; ".join(problems)
    result = dict(changed=False, ok=ok, databases=databases, volumes=volumes, msg=msg)
    if not ok and params["fail_on_problem"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
