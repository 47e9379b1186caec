#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: snapshot_create
short_description: Record the state of a Docker Compose project as a snapshot to roll back to
version_added: 0.1.0
description:
  - Records, in one call, what a rollback needs to return a compose project to its present state
    - the image ID each service's containers really run, the configured image reference, copies of
    the configuration files with their sha256, and the git commit of the project directory.
  - Writes C(<backup_root>/<project>/<snapshot_id>/manifest.json) with a C(manifest.json.sha256) beside it.
    The snapshot is assembled in a staging directory and published by a single rename, so an interrupted
    run never leaves a half-written snapshot behind.
  - Pins every recorded image with the tag C(<repository>:lastgood-<project>-<snapshot_id>) so that the images a
    rollback needs survive C(docker image prune) after a deploy moved their other tags away.
  - Applies retention (O(keep)) and never prunes the last-known-good snapshot nor the newest one.
  - Does not mark the snapshot last known good; M(lastgood.rollback.snapshot_mark) does that once a
    health gate passed.
  - Never records a stack in the middle of a change. While another live run holds the project's lock (a rollback,
    a deploy, another snapshot) it refuses with one line naming the holder, and while the journal of an interrupted
    rollback or deploy is there (the stack may be half rolled back) it refuses too, unless O(allow_interrupted)
    or O(bad_reason). Both refusals write nothing, in check mode too. Otherwise it holds the lock while it works,
    so that two snapshots never get the same id and a rollback started meanwhile waits.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.snapshots
  - lastgood.rollback.project
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Reads the live state and returns the manifest that would be written and the snapshots that
        would be pruned; writes, tags and deletes nothing.
  diff_mode:
    support: none
options:
  config_files:
    description:
      - Extra configuration files to record, as glob patterns relative to O(project_dir) (C(**) recurses).
      - The compose files (with none named, the one compose finds and the override file it adds, such as C(compose.override.yaml)),
        C(.env) and every C(env_file) of the services are always recorded, a link by the file it links to.
        Such an override file linking outside O(project_dir) is not recorded (a warning says so); restores use it as it is.
      - A pattern that resolves outside O(project_dir) is refused.
    type: list
    elements: str
    default: []
  snapshot_id:
    description:
      - Id of the new snapshot. Defaults to the UTC time, C(YYYYmmddTHHMMSSZ), which sorts in time order.
      - Must be a safe path component; an existing id is refused.
      - Snapshots are ordered by when they were taken, so a custom id (C(release-4.1)) never passes for the newest
        snapshot with retention or emergency recovery.
    type: str
  reason:
    description:
      - Free text stored in the manifest, for example the deploy that follows.
    type: str
  bad_reason:
    description:
      - Publish the snapshot already marked bad with this reason, as M(lastgood.rollback.snapshot_mark) marks one -
        a safety snapshot kept for forensics and to get data back, never a rollback target.
      - The marker is written before the snapshot appears, so a run killed right after never leaves it selectable.
    type: str
  holder:
    description:
      - The run this task belongs to (C(host), C(pid), C(pid_start), C(user)). Set by the action plugin
        from the controller; give it only to act as another run.
      - The lock of the run this task belongs to (a deploy or a rollback that snapshots) does not stop the module,
        nor does a lock whose holder is dead. Nor does that run's own journal.
      - When nobody holds the lock, the module takes it while it works (reason C(snapshot_create on its own)
        and O(reason)) and releases it when it ends. Not in check mode. A snapshot changes no stack, so it
        leaves no line in the project's audit log.
    type: dict
  allow_interrupted:
    description:
      - Take the snapshot although the journal of an interrupted rollback or deploy is there. That run left the
        stack somewhere between two versions, and a snapshot of it could become the last known good; resume the
        run (C(playbooks/rollback.yml)) instead unless you know the stack is as you want it.
      - Not needed with O(bad_reason), a snapshot that is never a rollback target.
    type: bool
    default: false
  pin_images:
    description:
      - Tag each recorded image ID as C(<repository>:lastgood-<project>-<snapshot_id>).
    type: bool
    default: true
  keep:
    description:
      - Number of snapshots to keep for the project after this one is written. V(0) keeps all.
      - The last-known-good snapshot and the newest snapshot are never pruned, nor any snapshot a rollback or deploy
        in progress or interrupted still needs (the target of its journal's plan, a deploy's snapshot of the version
        before it), so that running it again finds it.
    type: int
    default: 10
  keep_replaced:
    description:
      - Retention of the images rollbacks replaced. A tier 2 rollback keeps the image it replaces under
        C(<repository>:rolled-back-<UTC ts>); in the repository of each service's image, only the newest
        O(keep_replaced) of those tags stay, older ones are untagged. An image goes with its last tag unless a
        container or a snapshot's pin still holds it. Tags not in that exact format (your own) are never touched.
        V(0) keeps all.
      - Done here, before a deploy, and not in the rollback, whose time is the outage.
    type: int
    default: 5
  databases:
    description:
      - PostgreSQL databases to dump into the snapshot (C(databases/<name>.dump)), each with its sha256, size,
        server version and the row count of every table, counted in the very snapshot C(pg_dump) dumps.
      - With O(databases[].service) the tools run inside that compose service's container (compose-exec access);
        otherwise they connect to O(databases[].host) directly.
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
        description: Server address for direct access (default V(127.0.0.1); inside the container with O(databases[].service)).
        type: str
      port:
        description: Server port.
        type: int
        default: 5432
      user:
        description: Database role.
        type: str
        default: postgres
      password:
        description: Password, passed to the tools through the environment only (default C(PGPASSWORD) of the module).
        type: str
      format:
        description: Dump format; V(directory) allows parallel O(databases[].jobs).
        type: str
        choices: [custom, directory]
        default: custom
      jobs:
        description: Parallel jobs (directory format only).
        type: int
        default: 1
      compress:
        description: Compression level 0-9 (gzip dominates dump time on small machines); default that of C(pg_dump).
        type: int
  volumes:
    description:
      - Named volumes to archive into the snapshot (C(volumes/<volume>.tar)), with sha256 and a digest of the tree.
        A key of the compose file's C(volumes) section is resolved to the volume's real name.
    type: list
    elements: str
    default: []
  redis:
    description:
      - Compose service running Redis whose RDB to copy into the snapshot (after a completed C(BGSAVE)).
    type: str
  redis_port:
    description:
      - Port the Redis server listens on inside its container; redis-cli's default, 6379, when omitted.
    type: int
  redis_password:
    description:
      - Password of the Redis server, given to redis-cli through the environment only. Default C(REDISCLI_AUTH).
    type: str
"""

EXAMPLES = r"""
- name: Snapshot the stack before the deploy
  lastgood.rollback.snapshot_create:
    project_dir: /srv/shop
    config_files:
      - nginx/*.conf
      - certs/*.pem
    reason: deploy of release 2026.11.30
  register: snapshot

- name: Show where it went
  ansible.builtin.debug:
    msg: "{{ snapshot.snapshot_id }} in {{ snapshot.path }}"
"""

RETURN = r"""
snapshot_id:
  description: Id of the snapshot (written, or that would be written in check mode).
  returned: always
  type: str
  sample: 20261130T084512Z
snapshot_dir:
  description: Directory of the snapshot.
  returned: always
  type: str
  sample: /var/backups/lastgood/shop/20261130T084512Z
bad:
  description: The reason the snapshot is marked bad (O(bad_reason)), or null.
  returned: always
  type: str
  sample: the state replaced by a full rollback to 20261130T084512Z
manifest:
  description: The manifest written to C(manifest.json).
  returned: always
  type: dict
  contains:
    id:
      description: Snapshot id.
      type: str
    created_at:
      description: ISO 8601 UTC time of the snapshot.
      type: str
    project:
      description: Compose project name, directory and compose files.
      type: dict
    services:
      description: Per service the configured image reference C(image), the C(image_id) its containers run,
        the C(pin) tag, whether it is C(running) and its C(containers).
      type: dict
    git:
      description: C(commit), C(branch), C(dirty) and C(toplevel) of the project's git work tree, or null. C(dirty) - changes
        the commit and the recorded files lack (an untracked C(.env) the snapshot records does not count).
      type: dict
    files:
      description: Recorded files (relative paths) with C(sha256), C(size) and C(mode).
      type: dict
    databases:
      description: Per database the dump (C(file), C(format), C(sha256), C(size)), C(server_version), C(tables)
        (row count per table) and C(access) (how to reach the server again, without the password).
      type: dict
    volumes:
      description: Per volume the archive (C(file), C(sha256), C(size)), counts, C(tree_digest) and sample C(paths).
      type: dict
    redis:
      description: The RDB (C(file), C(sha256), C(size)), C(service) and the key count C(keys), or null.
      type: dict
pruned:
  description: Snapshot ids removed by retention (in check mode, those that would be).
  returned: always
  type: list
  elements: str
replaced_untagged:
  description: The C(rolled-back-*) tags untagged by O(keep_replaced) (in check mode, those that would be).
  returned: always
  type: list
  elements: str
  sample: [lastgood-demo/app:rolled-back-20261101T101502Z]
replaced_kept:
  description: C(rolled-back-*) tags beyond O(keep_replaced) that could not be untagged, each with the engine's reason
    (a container still uses its image, for example); they are tried again at the next snapshot.
  returned: always
  type: list
  elements: str
services_not_running:
  description: Services recorded without a running container (their configured image ID is recorded).
  returned: always
  type: list
  elements: str
"""

import glob
import os
import shutil
import socket
import stat

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_ARGUMENT_SPEC,
    load_project,
    recorded_paths,
    resolve_inside,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    APIError,
    docker_client,
    one_line,
    prune_rolled_back,
    split_reference,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._git import git_state
from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import lock_for_module, run_snapshots
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    FILES_DIR,
    FORMAT_VERSION,
    ManifestError,
    check_safe_name,
    discard_staging,
    finish_staging,
    isoformat,
    load_manifest,
    new_snapshot_id,
    project_root,
    retention_plan,
    sha256_file,
    snapshot_path,
    stale_staging,
    start_staging,
    utc_now,
    write_bad_marker,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._snapshot_data import (
    DATABASE_ENTRY_SPEC,
    DataError,
    capture,
    plan,
    warnings_of,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._state import live_services

PIN_TAG_PREFIX = "lastgood-"


def recorded_files(module, project, patterns):
    """Relative paths of the files a snapshot records, all inside the project directory."""
    base = os.path.realpath(project.project_dir)
    wanted = set(project.host_files())  # compose files, .env, env_file entries
    for pattern in patterns:
        if os.path.isabs(pattern):
            raise ManifestError("config file pattern %r must be relative to the project directory" % pattern)
        for match in glob.glob(os.path.join(base, pattern), recursive=True):
            if os.path.isfile(match):
                wanted.add(os.path.relpath(match, base))
    override = project.override_files()
    files = []
    for rel in sorted(wanted):
        inside = resolve_inside(base, rel)
        if inside is None and rel in override:
            # Host configuration kept elsewhere, which compose reads all the same: restores use it as it is.
            module.warn("%s links outside the project directory: compose reads it, the snapshot does not record it"
                        % rel)
        elif inside is None:
            raise ManifestError("config file %s resolves outside the project directory" % rel)
        elif os.path.isfile(os.path.join(base, inside)):
            files.append(inside)
    return files


def copy_files(project_dir, files, staging):
    recorded = {}
    for rel in files:
        source = os.path.join(project_dir, rel)
        target = os.path.join(staging, FILES_DIR, rel)
        os.makedirs(os.path.dirname(target), mode=0o750, exist_ok=True)
        shutil.copy2(source, target)
        info = os.stat(target)
        recorded[rel] = {
            "sha256": sha256_file(target),
            "size": info.st_size,
            "mode": "%04o" % stat.S_IMODE(info.st_mode),
        }
    return recorded


def describe_files(project_dir, files):
    """The manifest entries without copying (check mode)."""
    recorded = {}
    for rel in files:
        path = os.path.join(project_dir, rel)
        info = os.stat(path)
        recorded[rel] = {"sha256": sha256_file(path), "size": info.st_size,
                         "mode": "%04o" % stat.S_IMODE(info.st_mode)}
    return recorded


def pin_reference(reference, project_name, snapshot_id):
    """`<repository>:lastgood-<project>-<id>`: ids are unique per project only, and projects share repositories."""
    repository = split_reference(reference)[0]
    return "%s:%s%s-%s" % (repository, PIN_TAG_PREFIX, project_name, snapshot_id)


def remove_pins(client, manifest_services):
    for entry in manifest_services.values():
        pin = entry.get("pin")
        if not pin:
            continue
        try:
            # Removes only the tag while other tags or containers hold the image.
            client.api.remove_image(pin, noprune=False)
        except APIError:
            pass


def main():
    argument_spec = dict(
        **BACKUP_ROOT_ARGUMENT_SPEC,
        config_files=dict(type="list", elements="str", default=[]),
        snapshot_id=dict(type="str"),
        reason=dict(type="str"),
        bad_reason=dict(type="str"),
        pin_images=dict(type="bool", default=True),
        keep=dict(type="int", default=10),
        keep_replaced=dict(type="int", default=5),
        databases=dict(type="list", elements="dict", default=[], options=DATABASE_ENTRY_SPEC),
        volumes=dict(type="list", elements="str", default=[]),
        redis=dict(type="str"),
        redis_port=dict(type="int"),
        redis_password=dict(type="str", no_log=True, fallback=(env_fallback, ["REDISCLI_AUTH"])),
        holder=dict(type="dict"),
        allow_interrupted=dict(type="bool", default=False),
    )
    argument_spec.update(PROJECT_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    for option in ("keep", "keep_replaced"):
        if params[option] < 0:
            module.fail_json(msg="%s must be 0 (keep all) or a positive number, got %d" % (option, params[option]))

    project = load_project(module, params)
    # Before the id is chosen: under the lock, a second snapshot in the same second gets its own.
    lock_for_module(module, params["backup_root"], project.name, "snapshot_create", audit=False,
                    refuse_interrupted=None if params["allow_interrupted"] or params["bad_reason"] else
                    "the stack may be half way between two versions, and a snapshot of it could become the last known good")
    client = docker_client(module)
    moment = utc_now()

    try:
        root = project_root(params["backup_root"], project.name)
        if params["snapshot_id"]:
            snapshot_id = check_safe_name(params["snapshot_id"])
            if os.path.lexists(os.path.join(root, snapshot_id)):
                raise ManifestError("snapshot %s already exists in %s" % (snapshot_id, root))
        else:
            snapshot_id = new_snapshot_id(root, moment)
        files = recorded_files(module, project, params["config_files"])
    except ManifestError as exc:
        module.fail_json(msg=str(exc))

    services = live_services(project, client)
    not_running = [name for name, entry in services.items() if not entry["running"]]
    missing = [name for name, entry in services.items() if not entry["image_id"]]
    if missing:
        module.fail_json(msg="cannot snapshot: no container and no local image for service(s) %s"
                         % ", ".join(missing))
    for entry in services.values():
        entry["pin"] = pin_reference(entry["image"], project.name, snapshot_id) if params["pin_images"] else None

    manifest = {
        "format_version": FORMAT_VERSION,
        "id": snapshot_id,
        "created_at": isoformat(moment),
        "host": socket.gethostname(),
        "reason": params["reason"],
        "project": {
            "name": project.name,
            "dir": project.project_dir,
            # By the path their content is recorded under, so that a restore validates and starts that content.
            "compose_files": recorded_paths(os.path.realpath(project.project_dir), project.compose_files()),
        },
        "services": services,
        # The host's untracked .env or override file is recorded here, not uncommitted work the snapshot lacks.
        # (by the name git knows it by too, when it is a link to what the snapshot records).
        "git": git_state(module, project.project_dir, recorded=set(files) | set(project.host_files())),
        "files": {},
        "databases": {},
        "volumes": {},
        "redis": None,
    }
    path = snapshot_path(params["backup_root"], project.name, snapshot_id)
    result = dict(changed=True, snapshot_id=snapshot_id, snapshot_dir=path, manifest=manifest,
                  services_not_running=not_running, bad=params["bad_reason"] or None)
    for name in not_running:
        module.warn("service %s has no running container; its configured image is recorded" % name)

    if module.check_mode:
        manifest["files"] = describe_files(project.project_dir, files)
        try:
            manifest.update(plan(project, params["databases"], params["volumes"], params["redis"]))
        except DataError as exc:
            module.fail_json(msg=exc.msg, **exc.result)
        result["pruned"] = retention_plan(root, params["keep"], pending=snapshot_id, protect=run_snapshots(root))
        result["replaced_untagged"], result["replaced_kept"] = prune_rolled_back(
            client, [entry["image"] for entry in services.values()], params["keep_replaced"], check_mode=True)
        module.exit_json(**result)

    staging = start_staging(root)
    pinned = {}
    try:
        manifest["files"] = copy_files(project.project_dir, files, staging)
        manifest.update(capture(module, project, client, staging, params["databases"], params["volumes"],
                                params["redis"], redis_port=params["redis_port"], redis_password=params["redis_password"]))
        for line in warnings_of(manifest):
            module.warn(line)
        for name, entry in services.items():
            if entry["pin"]:
                client.api.tag(entry["image_id"], *entry["pin"].rsplit(":", 1))
                pinned[name] = entry
        if params["bad_reason"]:
            write_bad_marker(staging, params["bad_reason"], moment)
        finish_staging(staging, root, snapshot_id, manifest)
    except DataError as exc:
        # Nothing of an unpublished snapshot stays behind: neither its files nor its pins.
        discard_staging(staging)
        remove_pins(client, pinned)
        module.fail_json(msg="snapshot not written: %s" % exc.msg, **exc.result)
    except (OSError, APIError) as exc:
        discard_staging(staging)
        remove_pins(client, pinned)
        module.fail_json(msg="snapshot not written: %s" % one_line(exc))

    result["pruned"] = prune(module, client, root, params["keep"])
    result["replaced_untagged"], result["replaced_kept"] = prune_rolled_back(
        client, [entry["image"] for entry in services.values()], params["keep_replaced"])
    # Never removed here: another snapshot run may be writing one. Said, so the disk does not fill unseen.
    for name in stale_staging(root):
        module.warn("%s in %s is what an interrupted snapshot run left (dumps, archives); remove it once no "
                    "snapshot runs for this project" % (name, root))
    module.exit_json(**result)


def prune(module, client, root, keep):
    pruned = []
    for snapshot_id in retention_plan(root, keep, protect=run_snapshots(root)):
        directory = os.path.join(root, snapshot_id)
        try:
            remove_pins(client, load_manifest(directory)["services"])
        except ManifestError as exc:
            module.warn("pruning %s without untagging its images: %s" % (snapshot_id, exc))
        shutil.rmtree(directory)
        pruned.append(snapshot_id)
    return pruned


if __name__ == "__main__":
    main()
