# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data part of a snapshot: database dumps, volume archives, the Redis RDB.

Everything is written into the snapshot's staging directory, so it is published with the
manifest by one rename or not at all.
"""

from __future__ import annotations

import os

from ansible_collections.lastgood.rollback.plugins.module_utils import _postgres, _redis, _volumes
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import sha256_file

DATABASES_DIR = "databases"
VOLUMES_DIR = "volumes"
REDIS_DIR = "redis"

# The options of one entry of snapshot_create's `databases` (and of the snapshot role's
# lastgood_databases): compose-exec access with `service`, direct access with `host`.
DATABASE_ENTRY_SPEC = dict(
    name=dict(type="str", required=True),
    service=dict(type="str"),
    host=dict(type="str"),
    port=dict(type="int", default=5432),
    user=dict(type="str", default="postgres"),
    password=dict(type="str", no_log=True),
    format=dict(type="str", default="custom", choices=list(_postgres.FORMATS)),
    jobs=dict(type="int", default=1),
    compress=dict(type="int"),
)


class DataError(StepError):
    """Capturing a piece of data failed; `msg` is one line, `result` carries the details."""


def database_access(entry):
    """What the manifest keeps of an entry to reach the server again: never the password."""
    keys = ("service", "port", "user") if entry.get("service") else ("host", "port", "user")
    return {key: entry.get(key) for key in keys}


def target_params(project, entry):
    params = dict(database=entry["name"], port=entry["port"], user=entry["user"], password=entry.get("password"),
                  host=entry.get("host"), maintenance_db="postgres", connect_timeout=10)
    if entry.get("service"):
        params.update(service=entry["service"], project_dir=project.project_dir, files=project.files or None,
                      project_name=project.name)
    return params


def plan(project, databases, volumes, redis):
    """Check mode: what would be captured (names checked, nothing read)."""
    try:
        for entry in databases:
            _postgres.check_identifier(entry["name"])
        volume_names = [_volumes.resolve_volume_name(project, name) for name in volumes]
    except (_postgres.PostgresError, _volumes.VolumeError) as exc:
        raise DataError(exc.msg, **exc.result)
    return dict(
        databases={entry["name"]: dict(access=database_access(entry), planned=True) for entry in databases},
        volumes={name: dict(planned=True) for name in volume_names},
        redis=dict(service=redis, planned=True) if redis else None,
    )


def capture(module, project, client, staging, databases, volumes, redis, redis_port=None, redis_password=None):
    """Dump, archive and copy into `staging`; the manifest sections, with paths relative to it."""
    found = dict(databases={}, volumes={}, redis=None)
    try:
        for entry in databases:
            target = _postgres.target_from_params(module, target_params(project, entry))
            rel = os.path.join(DATABASES_DIR, _postgres.safe_file_name(entry["name"]) + (
                ".dump" if entry["format"] == "custom" else ".dir"))
            os.makedirs(os.path.join(staging, DATABASES_DIR), mode=0o750, exist_ok=True)
            meta = _postgres.dump_database(module, target, entry["name"], os.path.join(staging, rel),
                                           fmt=entry["format"], jobs=entry["jobs"], compress=entry["compress"])
            meta.update(file=rel, access=database_access(entry))
            found["databases"][entry["name"]] = meta
        for name in volumes:
            real = _volumes.resolve_volume_name(project, name)
            rel = os.path.join(VOLUMES_DIR, real + ".tar")
            meta = _volumes.backup_volume(module, client, real, os.path.join(staging, rel))
            meta["file"] = rel
            found["volumes"][real] = meta
        if redis:
            rel = os.path.join(REDIS_DIR, "dump.rdb")
            os.makedirs(os.path.join(staging, REDIS_DIR), mode=0o750, exist_ok=True)
            meta = _redis.backup_redis(module, project, redis, os.path.join(staging, rel), port=redis_port,
                                       password=redis_password, client=client)
            meta.update(file=rel, service=redis)
            found["redis"] = meta
    except (_postgres.PostgresError, _volumes.VolumeError, _redis.RedisError) as exc:
        raise DataError(exc.msg, **exc.result)
    return found


def warnings_of(sections):
    """Warnings the capture functions returned (live volume archived, ...)."""
    found = []
    for meta in list(sections["databases"].values()) + list(sections["volumes"].values()) + [sections["redis"] or {}]:
        found.extend(meta.pop("warnings", None) or [])
    return found


def artifact_paths(sections):
    """(relative path, recorded sha256) of every data artifact of a manifest."""
    found = []
    for kind in ("databases", "volumes"):
        for meta in (sections.get(kind) or {}).values():
            if meta.get("file"):
                found.append((meta["file"], meta.get("sha256")))
    if sections.get("redis") and sections["redis"].get("file"):
        found.append((sections["redis"]["file"], sections["redis"].get("sha256")))
    return found


def damaged_artifacts(snapshot_dir, manifest):
    """Relative paths of data artifacts missing or not matching their recorded sha256 (each read whole)."""
    damaged = []
    for rel, expected in artifact_paths(manifest):
        path = os.path.join(snapshot_dir, rel)
        try:
            if os.path.isdir(path):
                actual = _postgres.directory_digest(path)[0]
            else:
                actual = sha256_file(path)
        except (OSError, _postgres.PostgresError):
            actual = None
        if not expected or actual != expected:
            damaged.append(rel)
    return damaged
