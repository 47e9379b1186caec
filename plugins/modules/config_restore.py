#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_restore
short_description: Put a snapshot's configuration files back and recreate only the services whose configuration changed
version_added: 0.1.0
description:
  - Tier 1 of a rollback. Restores the configuration files a snapshot recorded (compose files, C(.env), C(env_file)s
    and the extra files of M(lastgood.rollback.snapshot_create)'s C(config_files)) into the project directory.
  - "Everything is verified before the first file changes: the manifest checksum, the sha256 of every snapshot copy
    (and again of every staged copy), then the staged set is validated - C(docker compose config) of the staged compose
    files and C(.env), C(nginx -t) in a throwaway container of each O(nginx_services) image with the staged files mounted
    where the service mounts them, and that each O(tls_pairs) certificate belongs to its key."
  - The files being replaced are copied, with their sha256, into the snapshot's rollback record
    C(<snapshot>/rollbacks/<UTC timestamp>/) (C(record.json) and C(files/)) before each restored file is renamed into place
    with the mode the snapshot recorded.
  - With O(apply=true), recreates exactly the services whose effective configuration changed - the service hash of
    C(docker compose config --hash) differs from the C(com.docker.compose.config-hash) label of their containers - with
    C(docker compose up --detach --no-deps --no-build --pull never), and removes containers of services the restored
    configuration does not have (O(remove_orphans)).
  - Values of env files never appear in the result or the diff; only the names of the keys that differ.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.lock
  - lastgood.rollback.snapshots
  - lastgood.rollback.project
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Verifies and validates exactly as a real run does and returns the files that would change, the services that
        would be recreated and the orphans that would be removed; writes nothing.
  diff_mode:
    support: full
    details:
      - Shows the before and after text of small text files, the checksums of large, binary or private-key files, and
        for env files only the keys whose value differs, with the values masked.
options:
  project_dir:
    description:
      - The compose project directory the files are restored into.
      - When O(project_name) is omitted and the live compose configuration does not resolve (the broken thing this
        module repairs), the project whose last-known-good snapshot was taken in this directory is used.
  files:
    description:
      - Compose files, relative to O(project_dir). Default those the snapshot recorded.
      - A compose file that is a link is used by the file it links to, whose content the snapshot records.
      - Of the snapshot's, an override file it did not record (it linked outside O(project_dir)) and that is no longer
        on the host is left out with a warning, as C(docker compose) would leave it out.
  snapshot_id:
    description:
      - Snapshot whose files to restore. Defaults to the last-known-good snapshot.
    type: str
  config_files:
    description:
      - Restrict the restore to the recorded files matching these patterns (shell-style, relative to O(project_dir)).
        The snapshot's compose files and C(.env) are always restored with them. A pattern matching no recorded file is refused.
      - Empty restores every file the snapshot recorded.
    type: list
    elements: str
    default: []
  validate:
    description:
      - Validate the staged files before anything changes (compose config, O(nginx_services), O(tls_pairs)).
      - With V(false) the validators are skipped; a staged compose configuration that does not resolve is then only a warning.
    type: bool
    default: true
  nginx_services:
    description:
      - Compose services whose container runs nginx. Their image runs C(nginx -t) with the service's bind mounts, the
        restored files mounted in place of the live ones, no pull, and the network C(none) (C(host) for a service using
        the host's network, so upstream names resolve as they will).
    type: list
    elements: str
    default: []
  tls_pairs:
    description:
      - Certificate and key files, relative to O(project_dir), whose public keys must match once restored.
        A pair of which neither file is restored is not checked.
    type: list
    elements: dict
    default: []
    suboptions:
      cert:
        description: Certificate file (PEM or DER X.509).
        type: str
        required: true
      key:
        description: Private key file (unencrypted PEM or DER).
        type: str
        required: true
  apply:
    description:
      - Recreate the services whose effective configuration changed. With V(false) only the files are restored.
    type: bool
    default: true
  remove_orphans:
    description:
      - Remove the containers of services that the restored configuration does not define.
    type: bool
    default: true
  wait:
    description:
      - Wait until the recreated containers run and are healthy. A caller that runs a health gate right after can skip it.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds the recreated containers get to run and be healthy.
    type: float
    default: 120
  stop_timeout:
    description:
      - Seconds each old or orphan container gets to stop (default the service's C(stop_grace_period), 10 for orphans).
    type: int
requirements:
  - The C(cryptography) Python library (an ansible-core dependency) for O(tls_pairs).
"""

EXAMPLES = r"""
- name: Plan the configuration rollback
  lastgood.rollback.config_restore:
    project_dir: /srv/shop
  check_mode: true
  diff: true
  register: plan

- name: Restore the last known good configuration, validating nginx and the TLS pair first
  lastgood.rollback.config_restore:
    project_dir: /srv/shop
    nginx_services: [proxy]
    tls_pairs:
      - cert: certs/shop.crt
        key: certs/shop.key
  register: restore

- name: Restore only the nginx files (compose files and .env come along), from a given snapshot
  lastgood.rollback.config_restore:
    project_dir: /srv/shop
    snapshot_id: 20261130T084512Z
    config_files: ["nginx/*"]
"""

RETURN = r"""
snapshot_id:
  description: The snapshot restored.
  returned: always
  type: str
  sample: 20261130T084512Z
project_name:
  description: The compose project name.
  returned: always
  type: str
files:
  description: Per covered file the C(action) (V(restore), V(create), V(chmod), V(unchanged)), the live and the restored
    C(sha256) and C(mode), and for env files C(changed_keys) (names only).
  returned: always
  type: dict
files_restored:
  description: Files whose content or mode was (or would be) restored.
  returned: always
  type: list
  elements: str
services_recreated:
  description: Services recreated (in check mode, that would be) because their effective configuration changed.
  returned: always
  type: list
  elements: str
orphans_removed:
  description: Services whose containers were (or would be) removed because the restored configuration lacks them.
  returned: always
  type: list
  elements: str
record_dir:
  description: The rollback record holding the replaced files and C(record.json), or null when no file changed (and in check mode).
  returned: always
  type: str
  sample: /var/backups/lastgood/shop/20261130T084512Z/rollbacks/20261130T101502Z
ready:
  description: Whether every recreated container runs and is healthy (null without O(wait) or when nothing was recreated).
  returned: always
  type: bool
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.lastgood.rollback.plugins.module_utils import _services
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_ARGUMENT_SPEC,
    ComposeError,
    ComposeProject,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._config import (
    ConfigError,
    ConfigRestore,
    changed_keys,
    file_diff,
    is_env_file,
    live_config_hashes,
    parse_hashes,
    project_name_from_snapshots,
    services_mounting,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import fail_step
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    ManifestError,
    load_verified_snapshot,
    utc_now,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import HOLDER_ARGUMENT_SPEC, lock_for_module

try:
    import cryptography  # noqa: F401  pylint: disable=unused-import
    HAS_CRYPTOGRAPHY = True
except ImportError:
    HAS_CRYPTOGRAPHY = False


def project_name_of(module, params):
    if params["project_name"]:
        return params["project_name"]
    try:
        return ComposeProject(module, params["project_dir"], params["files"]).name
    except ComposeError as exc:
        name = project_name_from_snapshots(params["backup_root"], params["project_dir"])
        if name:
            module.warn("the live compose configuration does not resolve (%s); project %s is the one whose "
                        "last-known-good snapshot was taken in %s" % (exc.msg, name, params["project_dir"]))
            return name
        module.fail_json(msg="nothing changed: cannot tell the compose project name: %s; set project_name" % exc.msg)


def describe_files(restore):
    env_files = set()
    for spec in (restore.staged_config.get("services") or {}).values():
        for entry in spec.get("env_file") or []:
            path = entry.get("path") if isinstance(entry, dict) else entry
            if path:
                env_files.add(os.path.relpath(path, restore.project_dir))
    secret = set()
    for pair in restore.module.params["tls_pairs"]:
        secret.add(os.path.normpath(pair["key"]))
    files, diff = {}, []
    for rel, step in sorted(restore.plan.items()):
        live = step["live"]
        entry = {"action": step["action"], "sha256_before": live["sha256"] if live else None,
                 "sha256_after": step["sha256"], "mode_before": live["mode"] if live else None, "mode_after": step["mode"]}
        live_path = os.path.join(restore.project_dir, rel)
        staged_path = os.path.join(restore.staging, rel)
        if is_env_file(rel, env_files):
            entry["changed_keys"] = changed_keys(live_path if live else None, staged_path)
        files[rel] = entry
        if step["changes"]:
            diff.append(file_diff(rel, live_path, staged_path, live, {"sha256": step["sha256"], "mode": step["mode"]},
                                  env_files=env_files, secret_files=secret))
    return files, diff, env_files


def content_changed(restore):
    return [rel for rel, step in restore.plan.items() if step["content_changes"]]


def main():
    argument_spec = dict(
        **BACKUP_ROOT_ARGUMENT_SPEC,
        snapshot_id=dict(type="str"),
        config_files=dict(type="list", elements="str", default=[]),
        validate=dict(type="bool", default=True),
        nginx_services=dict(type="list", elements="str", default=[]),
        tls_pairs=dict(type="list", elements="dict", default=[], options=dict(
            cert=dict(type="str", required=True), key=dict(type="str", required=True, no_log=False))),
        apply=dict(type="bool", default=True),
        remove_orphans=dict(type="bool", default=True),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="float", default=120),
        stop_timeout=dict(type="int"),
    )
    argument_spec.update(PROJECT_ARGUMENT_SPEC)
    argument_spec.update(HOLDER_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if params["tls_pairs"] and params["validate"] and not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"))
    if not os.path.isdir(params["project_dir"]):
        module.fail_json(msg="nothing changed: project directory %s does not exist" % params["project_dir"])

    name = project_name_of(module, params)
    lock_for_module(module, params["backup_root"], name, "config_restore")
    try:
        snapshot_id, snapshot_dir, manifest = load_verified_snapshot(params["backup_root"], name, params["snapshot_id"])
    except ManifestError as exc:
        module.fail_json(msg="nothing changed: %s" % exc)
    client = docker_client(module)
    restore = ConfigRestore(module, client, params["project_dir"], params["files"], name, snapshot_id, snapshot_dir,
                            manifest)
    result = dict(changed=False, snapshot_id=snapshot_id, project_name=name, files={}, files_restored=[],
                  services_recreated=[], orphans_removed=[], record_dir=None, ready=None, actions=restore.actions,
                  diff=[])
    try:
        run(module, restore, result)
    except ConfigError as exc:
        fail_step(module, exc, **result)
    finally:
        restore.cleanup()
    module.exit_json(**result)


def run(module, restore, result):
    params = module.params
    restore.prepare(params["config_files"])
    changing = restore.changing()
    resolved = restore.validate_compose(strict=params["validate"])
    if params["validate"] and changing:
        restore.validate_tls(params["tls_pairs"])
        restore.validate_nginx(params["nginx_services"])
    result["files"], result["diff"], env_files = describe_files(restore)
    result["files_restored"] = changing
    for rel in changing:
        keys = result["files"][rel].get("changed_keys")
        detail = " (keys %s)" % ", ".join(keys) if keys else ""
        result["actions"].append("%s %s%s" % (restore.plan[rel]["action"], rel, detail))

    recreate, orphans, ids = restore.services_plan(restore.staged_hashes, restore.staged_config, params["remove_orphans"])
    env_file_restored = False
    if resolved:
        # compose config reads a service's env_file from the project directory: a restored one
        # changes the service's environment although the staged hash cannot show it yet.
        for service, spec in sorted((restore.staged_config.get("services") or {}).items()):
            paths = [os.path.relpath(e.get("path") if isinstance(e, dict) else e, restore.project_dir)
                     for e in spec.get("env_file") or []]
            if any(p in changing and p in env_files for p in paths):
                env_file_restored = True
                if service in ids and service not in recreate:
                    recreate.append(service)
        recreate += [s for s in services_mounting(restore.staged_config, restore.project_dir, content_changed(restore))
                     if s in ids and s not in recreate]
    if not params["apply"]:
        recreate, orphans = [], []
    recreate = sorted(recreate)

    if module.check_mode:
        result["services_recreated"] = recreate
        result["orphans_removed"] = orphans
        result["actions"] += ["recreate %s" % s for s in recreate] + ["remove orphan %s" % s for s in orphans]
        result["changed"] = bool(changing or recreate or orphans)
        return

    result["record_dir"] = restore.keep_and_install(utc_now())
    if result["record_dir"]:
        result["actions"].append("kept the replaced files in %s" % result["record_dir"])
    result["changed"] = bool(changing)
    if not params["apply"]:
        return

    # Without a resolved staged model (validate=false) or with a restored env_file (which the staged
    # model read from the project directory), the decision is taken on the files now in place.
    project = ComposeProject(module, restore.project_dir, restore.compose_files, restore.project_name)
    if resolved and not env_file_restored:
        # The files now in place are the staged set compose resolved (in this very project
        # directory): its model and plan stand, and a restore saves the compose runs.
        project._config = restore.staged_config  # pylint: disable=protected-access
        config = restore.staged_config
    else:
        try:
            config = project.config()
            hashes = parse_hashes(project.run(["config", "--hash", "*"])[1])
        except ComposeError as exc:
            raise ConfigError("files restored, but docker compose config of the project fails: %s" % exc.msg, **exc.result)
        recreate, orphans, ids = restore.services_plan(hashes, config, params["remove_orphans"])
    mounting = services_mounting(config, restore.project_dir, content_changed(restore))
    recreate = sorted(set(recreate) | set(s for s in mounting if s in ids))
    if recreate:
        try:
            up = _services.bring_up(project, restore.client, recreate, wait=params["wait"],
                                    wait_timeout=params["wait_timeout"], recreate="always",
                                    remove_orphans=params["remove_orphans"], stop_timeout=params["stop_timeout"])
        except ComposeError as exc:
            raise ConfigError("files restored, but recreating %s failed: %s" % (", ".join(recreate), exc.msg), **exc.result)
        result.update(changed=True, services_recreated=recreate, ready=up.get("ready"))
        result["actions"] += up["actions"]
        if up.get("ready") is False:
            raise ConfigError("configuration restored, but " + _services.not_ready_msg(up))
    if orphans:
        # `up --remove-orphans` removed them when it ran; whatever is left goes here.
        _live, ids = live_config_hashes(restore.client, restore.project_name)
        restore.remove_containers([c for s in orphans for c in ids.get(s, [])],
                                  params["stop_timeout"] if params["stop_timeout"] is not None else 10)
        result.update(changed=True, orphans_removed=orphans)
        result["actions"] += ["remove orphan %s" % s for s in orphans]


if __name__ == "__main__":
    main()
