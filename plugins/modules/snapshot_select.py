#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: snapshot_select
short_description: Pick the newest snapshot of a Docker Compose project that fully verifies, walking back past damaged ones
version_added: 0.2.0
description:
  - Walks the project's snapshots from the newest back and returns the first one a full restore can rely on - its
    manifest matches its sha256, it is not marked bad, every configuration file copy and every data artifact
    (database dumps, volume archives, the Redis file; each read whole) matches its sha256, and every recorded image
    is present in the local engine (O(require_images)). Every snapshot passed over is returned with the reason.
  - O(before) asks for the newest verified snapshot taken before a moment (for example before a security breach).
  - When none verifies, RV(fallback_commit) names the code to fall back to - the commit recorded by the newest
    snapshot whose manifest still verifies and is not marked bad, else the newest C(lastgood/good-*) git tag.
  - With O(measure_data_loss), measures what a restore of the chosen snapshot would lose - per recorded database
    and table the rows present now beyond the recorded count, and per recorded volume the files changed after the
    snapshot was taken. What cannot be measured (a server that does not answer) is reported, never a failure.
  - Read-only.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.project.LOOKUP
  - lastgood.rollback.snapshots
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
  - lastgood.rollback.attributes.INFO_MODULE
options:
  before:
    description:
      - Only snapshots taken strictly before this UTC moment (C(2026-11-30T08:45:12Z) or C(20261130T084512Z)).
    type: str
  require_images:
    description: Pass over snapshots whose recorded images are no longer present locally.
    type: bool
    default: true
  fail_when_none:
    description: Fail when no snapshot verifies (by default RV(found=false) is returned, with the fallback).
    type: bool
    default: false
  measure_data_loss:
    description: Measure the data-loss window of the chosen snapshot (RV(data_loss)).
    type: bool
    default: false
  databases:
    description:
      - Database access entries (as C(lastgood_databases)) overriding what the manifest recorded, for
        O(measure_data_loss). Passwords default to C(PGPASSWORD).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Database name.
        type: str
        required: true
      service:
        description: Compose service running PostgreSQL (compose-exec access).
        type: str
      host:
        description: Server address for direct access.
        type: str
      port:
        description: Server port; the recorded one when omitted.
        type: int
      user:
        description: Database role; the recorded one when omitted.
        type: str
      password:
        description: Password, given to the server through the connection only, never logged.
        type: str
      format:
        description: Accepted so that C(lastgood_databases) entries pass as they are; not used here.
        type: str
        choices: [custom, directory]
      jobs:
        description: Accepted so that C(lastgood_databases) entries pass as they are; not used here.
        type: int
      compress:
        description: Accepted so that C(lastgood_databases) entries pass as they are; not used here.
        type: int
requirements:
  - The Docker SDK for Python (C(docker)) with O(require_images) or O(measure_data_loss) of volumes.
  - C(psycopg2) to measure the rows of databases.
  - git when no snapshot verifies and O(project_dir) is given (the C(lastgood/good-*) tags).
"""

EXAMPLES = r"""
- name: The newest snapshot a full restore can use
  lastgood.rollback.snapshot_select:
    project_dir: /srv/shop
    measure_data_loss: true
  register: chosen

- name: The newest verified snapshot taken before the breach
  lastgood.rollback.snapshot_select:
    project_dir: /srv/shop
    before: "2026-11-30T08:00:00Z"
    fail_when_none: true
"""

RETURN = r"""
found:
  description: Whether a snapshot verifies.
  returned: always
  type: bool
snapshot_id:
  description: The chosen snapshot, or null.
  returned: always
  type: str
  sample: 20261130T084512Z
created_at:
  description: When the chosen snapshot was taken (the start of the data-loss window), or null.
  returned: always
  type: str
age_s:
  description: Seconds since the chosen snapshot was taken, or null.
  returned: always
  type: float
manifest:
  description: The chosen snapshot's verified manifest, or null.
  returned: always
  type: dict
project_name:
  description: The compose project.
  returned: always
  type: str
skipped:
  description: Snapshots passed over, newest first, each with C(id) and C(reason).
  returned: always
  type: list
  elements: dict
  sample: [{id: 20261130T090000Z, reason: "data artifacts missing or not matching their sha256: databases/app.dump"}]
fallback_commit:
  description:
    - When no snapshot verifies, the commit to fall back to (C(commit), C(source) C(snapshot) or C(tag), C(snapshot_id)
      or C(tag)), or null.
  returned: always
  type: dict
data_loss:
  description:
    - With O(measure_data_loss), C(since) (the snapshot's time), C(databases) (per database C(rows_newer) and per table
      C(recorded), C(live), C(newer), or C(error)), C(volumes) (per volume C(files_newer), a C(sample), or C(error)),
      C(rows_newer) and C(files_newer) in total, and C(lines) for people.
  returned: when O(measure_data_loss=true)
  type: dict
msg:
  description: One line on what was chosen and what was passed over.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils import _emergency, _postgres, _volumes
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_LOOKUP_ARGUMENT_SPEC,
    PROJECT_LOOKUP_REQUIRED_ONE_OF,
    resolve_project_name,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client
from ansible_collections.lastgood.rollback.plugins.module_utils._git import GOOD_TAG_PREFIX
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    ManifestError,
    isoformat,
    project_root,
    utc_now,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._snapshot_data import DATABASE_ENTRY_SPEC


def newest_good_tag(module, project_dir):
    """{commit, tag, source: tag} of the newest lastgood/good-* tag of the work tree, or None."""
    git = module.get_bin_path("git")
    if not git or not project_dir:
        return None
    rc, out, _err = module.run_command([git, "-C", project_dir, "for-each-ref", "--sort=-creatordate", "--count=1",
                                        "--format=%(*objectname)%(objectname) %(refname:short)", "refs/tags/" + GOOD_TAG_PREFIX + "*"])
    if rc != 0 or not out.strip():
        return None
    ids, tag = out.strip().split(" ", 1)
    # %(*objectname) (the tagged commit of an annotated tag) comes first; a light tag has only its own.
    return dict(commit=ids[:40], tag=tag, source="tag")


def count_database(module, params, name, recorded):
    access = dict(recorded.get("access") or {})
    override = next((entry for entry in params["databases"] if entry.get("name") == name), {})
    access.update({key: value for key, value in override.items() if key in ("service", "host", "port", "user") and value})
    target_params = dict(database=name, host=access.get("host"), port=access.get("port") or 5432,
                         user=access.get("user") or "postgres", password=override.get("password") or os.environ.get("PGPASSWORD"),
                         maintenance_db="postgres", connect_timeout=5)
    if access.get("service"):
        target_params.update(service=access["service"], project_dir=params["project_dir"], files=params["files"],
                             project_name=params["project_name"])
    session = None
    try:
        if access.get("service") and not params["project_dir"]:
            raise _postgres.PostgresError("the database is reached through compose service %s: give project_dir" % access["service"])
        target = _postgres.target_from_params(module, target_params)
        session = target.session(name)
        live = {}
        for schema, table, key, _estimate in _postgres.user_tables(session):
            live[key] = int(session.run(_postgres.count_statement(schema, table))[0][0])
    except _postgres.PostgresError as exc:
        return dict(error=exc.msg)
    finally:
        if session is not None:
            session.close()
    tables = _emergency.table_window({k: int(v) for k, v in (recorded.get("tables") or {}).items()}, live)
    return dict(tables=tables, rows_newer=sum(t["newer"] or 0 for t in tables.values()))


def measure(module, params, manifest, since):
    window = dict(since=isoformat(since) if since else None, databases={}, volumes={})
    for name, recorded in sorted((manifest.get("databases") or {}).items()):
        window["databases"][name] = count_database(module, params, name, recorded or {})
    volumes = manifest.get("volumes") or {}
    if volumes:
        client = docker_client(module)
        for name in sorted(volumes):
            try:
                mountpoint = _volumes.inspect_volume(client, name)["mountpoint"]
            except _volumes.VolumeError as exc:
                window["volumes"][name] = dict(error=exc.msg)
                continue
            count, sample, scanned, complete = _emergency.newer_files(mountpoint, since.timestamp() if since else 0)
            window["volumes"][name] = dict(files_newer=count, sample=sample, scanned=scanned, complete=complete)
    window["rows_newer"] = sum(d.get("rows_newer") or 0 for d in window["databases"].values())
    window["files_newer"] = sum(v.get("files_newer") or 0 for v in window["volumes"].values())
    window["measurable"] = not any(v.get("error") for v in list(window["databases"].values()) + list(window["volumes"].values()))
    window["lines"] = _emergency.window_lines(window)
    return window


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **PROJECT_LOOKUP_ARGUMENT_SPEC,
            **BACKUP_ROOT_ARGUMENT_SPEC,
            before=dict(type="str"),
            require_images=dict(type="bool", default=True),
            fail_when_none=dict(type="bool", default=False),
            measure_data_loss=dict(type="bool", default=False),
            # The entries' options (password no_log) are known before AnsibleModule logs the invocation;
            # no defaults, so that what an entry leaves out is taken from the record.
            databases=dict(type="list", elements="dict", default=[], options=dict(
                (key, {k: v for k, v in spec.items() if k != "default"}) for key, spec in DATABASE_ENTRY_SPEC.items())),
        ),
        required_one_of=PROJECT_LOOKUP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params = module.params
    project_name = resolve_project_name(module, params)
    params["project_name"] = project_name
    try:
        before = _emergency.parse_time(params["before"]) if params["before"] else None
        root = project_root(params["backup_root"], project_name)
    except (_emergency.EmergencyError, ManifestError) as exc:
        module.fail_json(msg=str(exc))
    checker = _emergency.image_checker(docker_client(module)) if params["require_images"] else None
    chosen = _emergency.select_snapshot(root, before=before, image_present=checker)
    skipped = chosen["skipped"]
    skipped_text = "; ".join("%s: %s" % (s["id"], s["reason"]) for s in skipped)
    result = dict(changed=False, project_name=project_name, found=chosen["snapshot_id"] is not None,
                  snapshot_id=chosen["snapshot_id"], manifest=chosen["manifest"], skipped=skipped,
                  created_at=None, age_s=None, fallback_commit=None)
    if result["found"]:
        since = _emergency.snapshot_time(chosen["snapshot_id"], chosen["manifest"])
        result["created_at"] = isoformat(since) if since else None
        result["age_s"] = round((utc_now() - since).total_seconds(), 1) if since else None
        result["msg"] = "snapshot %s verifies%s" % (chosen["snapshot_id"], "; passed over %s" % skipped_text if skipped else "")
        if params["measure_data_loss"]:
            result["data_loss"] = measure(module, params, chosen["manifest"], since)
    else:
        result["fallback_commit"] = chosen["fallback_commit"] or newest_good_tag(module, params["project_dir"])
        result["msg"] = "no snapshot of %s verifies%s%s" % (
            project_name, "%s (%s)" % (" before " + isoformat(before) if before else "", skipped_text) if skipped else
            (" before " + isoformat(before) if before else " (there are none)"),
            "; fallback: commit %s (%s)" % (result["fallback_commit"]["commit"][:12], result["fallback_commit"]["source"])
            if result["fallback_commit"] else "; no commit to fall back to")
        if params["measure_data_loss"]:
            result["data_loss"] = dict(since=None, databases={}, volumes={}, rows_newer=0, files_newer=0, measurable=False,
                                       lines=["no snapshot is used: the data is left as it is"])
        if params["fail_when_none"]:
            module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
