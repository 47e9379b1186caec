#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: evidence_capture
short_description: Preserve the evidence of a breached compose project, and pick the snapshot from before the breach
version_added: 0.1.0
description:
  - Picks the newest snapshot of the project taken before O(before) whose manifest, file copies and data archives verify
    against their sha256, which is not marked bad and whose recorded images are all still present (or checks
    O(snapshot_id)), so the restore that follows cannot refuse it after the host was isolated and stopped. Without one
    it fails with one line and writes nothing.
  - Writes into C(<dest>/evidence/) - every container's C(docker inspect) summary with its image ID (C(containers.json)),
    its log with timestamps (C(logs/)), its running processes (C(processes/), from C(docker top)), C(git status)
    and the commit of the project directory (C(git.txt)), the configuration files that differ from the snapshot's
    recorded sha256 (C(changed-files.json), checksums only - no copies, as they may hold secrets), and finally
    C(SHA256SUMS) over all of it (C(sha256sum -c) format).
  - Evidence is captured once per O(dest) - a directory with C(SHA256SUMS) already is left as it is.
  - Only reads the project - containers, files and the git work tree are not changed.
  - Appends timestamped lines to C(<dest>/steps.log) (see O(started_at)).
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.project.LOOKUP
  - lastgood.rollback.snapshots
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Picks and verifies the snapshot and reports what would be captured; writes nothing. The security-breach role
        runs it so as its preflight.
  diff_mode:
    support: none
options:
  dest:
    description:
      - The incident directory; the evidence goes to C(<dest>/evidence).
    type: path
    required: true
  before:
    description:
      - The breach time (ISO 8601 with a time zone, for example C(2026-11-30T10:00:00Z)). The snapshot chosen is the newest
        verified one created before it. Required unless O(snapshot_id) is given.
    type: str
  snapshot_id:
    description:
      - Use this snapshot instead of choosing one (still verified, and still refused when taken after O(before)).
    type: str
  started_at:
    description:
      - When the procedure started (seconds since the epoch). With it, a C(started) line with that time goes first into
        C(<dest>/steps.log); an C(evidence) line follows the capture in any case.
    type: float
  log_lines:
    description:
      - Last lines of each container's log to keep (V(0) - all).
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Preserve the evidence before anything is stopped
  lastgood.rollback.evidence_capture:
    project_dir: /srv/shop
    dest: /var/backups/lastgood/shop/incidents/20261130T120000Z
    before: "2026-11-30T09:40:00Z"
  register: evidence
"""

RETURN = r"""
snapshot_id:
  description: The snapshot chosen (newest verified one before O(before)).
  returned: always
  type: str
snapshot_created_at:
  description: When that snapshot was taken.
  returned: always
  type: str
passed_over:
  description: Newer snapshots that were not chosen, each with C(id) and C(reason).
  returned: always
  type: list
  elements: dict
evidence_dir:
  description: Where the evidence is.
  returned: always
  type: str
containers:
  description: Per container C(name), C(service), C(image), C(image_id), C(state).
  returned: always
  type: list
  elements: dict
changed_files:
  description: Recorded files that differ from the snapshot - C(path), C(recorded) and C(now) sha256 (null when gone).
  returned: always
  type: list
  elements: dict
git_status:
  description: C(git status --porcelain) lines of the project directory (empty when not a git work tree).
  returned: always
  type: list
  elements: str
files:
  description: Number of evidence files listed in C(SHA256SUMS).
  returned: always
  type: int
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils import _manifest, _snapshot_data
from ansible_collections.lastgood.rollback.plugins.module_utils._breach import (
    BreachError,
    append_step,
    changed_files,
    parse_moment,
    write_atomic,
    write_sums,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_LOOKUP_ARGUMENT_SPEC,
    resolve_project_name,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client, one_line, project_containers
from ansible_collections.lastgood.rollback.plugins.module_utils._emergency import image_checker, select_snapshot
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import fail_step

try:
    from docker.errors import DockerException
except ImportError:  # reported by docker_client()
    DockerException = Exception


def choose(params, project_name, image_present=None):
    """The snapshot to restore (and the newer ones passed over); with `image_present(image_id)`,
    a snapshot whose recorded images are gone (the restore would refuse it) is never chosen."""
    if params["snapshot_id"]:
        try:
            snapshot_id, directory, manifest = _manifest.load_verified_snapshot(
                params["backup_root"], project_name, params["snapshot_id"])
        except _manifest.ManifestError as exc:
            raise BreachError(str(exc))
        damaged = _snapshot_data.damaged_artifacts(directory, manifest)
        if damaged:
            raise BreachError("snapshot %s: data archives do not match their sha256: %s" % (snapshot_id, ", ".join(damaged)))
        gone = sorted(name for name, entry in (manifest.get("services") or {}).items()
                      if image_present and (not entry.get("image_id") or not image_present(entry["image_id"])))
        if gone:
            raise BreachError("snapshot %s cannot be restored: images no longer present for %s" % (snapshot_id, ", ".join(gone)))
        if params["before"] and parse_moment(manifest.get("created_at")) >= parse_moment(params["before"]):
            raise BreachError("snapshot %s was taken after the breach time %s" % (snapshot_id, params["before"]))
        return snapshot_id, directory, manifest, []
    if not params["before"]:
        raise BreachError("give the breach time (before) or a snapshot_id")
    # The same walk back as an emergency recovery's (lastgood.rollback.snapshot_select), bounded by the breach time.
    moment = parse_moment(params["before"])
    root = _manifest.project_root(params["backup_root"], project_name)
    found = select_snapshot(root, before=moment, image_present=image_present)
    if found["snapshot_id"] is None:
        skipped = found["skipped"]
        raise BreachError("no verified snapshot of %s was taken before the breach time %s%s; nothing was stopped"
                          % (project_name, params["before"],
                             " (passed over: %s)" % "; ".join("%s: %s" % (s["id"], s["reason"]) for s in skipped[:5])
                             if skipped else " (no snapshots under %s)" % root))
    return found["snapshot_id"], os.path.join(root, found["snapshot_id"]), found["manifest"], found["skipped"]


def git_state(module, project_dir):
    if not os.path.isdir(os.path.join(project_dir, ".git")):
        return "", []
    rc, head, _err = module.run_command(["git", "-C", project_dir, "rev-parse", "HEAD"])
    rc2, status, err = module.run_command(["git", "-C", project_dir, "status", "--porcelain=v1", "--untracked-files=all"])
    if rc2 != 0:
        raise BreachError("git status failed in %s: %s" % (project_dir, one_line(err)))
    return (head.strip() if rc == 0 else ""), [line for line in status.splitlines() if line]


def capture(module, client, project_dir, project_name, evidence, manifest, log_lines):
    by_service = project_containers(client, project_name)
    containers = [c for service in sorted(by_service, key=str) for c in by_service[service]]
    os.makedirs(os.path.join(evidence, "logs"), mode=0o700)
    os.makedirs(os.path.join(evidence, "processes"), mode=0o700)
    for container in containers:
        name = container["name"] or container["id"][:12]
        logs = client.api.logs(container["id"], timestamps=True, tail=log_lines or "all")
        write_atomic(os.path.join(evidence, "logs", name + ".log"), logs, 0o600)
        if container["state"] == "running":
            top = client.api.top(container["id"], ps_args="-ef")
            text = "\n".join(["\t".join(top.get("Titles") or [])] + ["\t".join(p) for p in top.get("Processes") or []])
            write_atomic(os.path.join(evidence, "processes", name + ".txt"), text + "\n", 0o600)
    head, status = git_state(module, project_dir)
    write_atomic(os.path.join(evidence, "git.txt"), "commit %s\n%s\n" % (head or "-", "\n".join(status)), 0o600)
    changed = changed_files(project_dir, manifest)
    write_atomic(os.path.join(evidence, "changed-files.json"), json.dumps(changed, indent=2) + "\n", 0o600)
    write_atomic(os.path.join(evidence, "containers.json"), json.dumps(containers, indent=2, sort_keys=True) + "\n", 0o600)
    return containers, changed, status


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **PROJECT_LOOKUP_ARGUMENT_SPEC,
            **_manifest.BACKUP_ROOT_ARGUMENT_SPEC,
            dest=dict(type="path", required=True),
            before=dict(type="str"),
            snapshot_id=dict(type="str"),
            log_lines=dict(type="int", default=0),
            started_at=dict(type="float"),
        ),
        required_one_of=[("before", "snapshot_id")],
        supports_check_mode=True,
    )
    params = module.params
    if not params["project_dir"]:
        module.fail_json(msg="project_dir is required: the evidence includes its files and git state")
    project_name = resolve_project_name(module, params)
    client = docker_client(module)

    try:
        snapshot_id, _directory, manifest, skipped = choose(params, project_name, image_checker(client))
    except BreachError as exc:
        fail_step(module, exc, changed=False)
    evidence = os.path.join(params["dest"], "evidence")
    result = dict(changed=False, snapshot_id=snapshot_id, snapshot_created_at=manifest.get("created_at"),
                  passed_over=skipped, evidence_dir=evidence, containers=[], changed_files=[], git_status=[], files=0)
    sums = os.path.join(evidence, "SHA256SUMS")
    if os.path.exists(sums):
        with open(sums, encoding="utf-8") as handle:
            result["files"] = len(handle.read().splitlines())
        module.exit_json(msg="evidence already captured in %s" % evidence, **result)
    try:
        if module.check_mode:
            by_service = project_containers(client, project_name)
            result["containers"] = [c for service in sorted(by_service, key=str) for c in by_service[service]]
            result["changed_files"] = changed_files(params["project_dir"], manifest)
            result["git_status"] = git_state(module, params["project_dir"])[1]
            result["changed"] = True
            module.exit_json(**result)
        if os.path.exists(evidence):
            raise BreachError("%s exists without SHA256SUMS (an interrupted capture?): move it aside first" % evidence)
        os.makedirs(params["dest"], mode=0o700, exist_ok=True)
        if params["started_at"]:
            append_step(params["dest"], "started", "breach since %s; restore target %s" % (params["before"] or "-", snapshot_id),
                        moment=params["started_at"])
        containers, changed, status = capture(module, client, params["project_dir"], project_name, evidence, manifest,
                                              params["log_lines"])
        result.update(changed=True, containers=containers, changed_files=changed, git_status=status,
                      files=write_sums(evidence))
        append_step(params["dest"], "evidence", "%d files in %s (SHA256SUMS); %d changed since snapshot %s"
                    % (result["files"], evidence, len(changed), snapshot_id))
    except BreachError as exc:
        fail_step(module, exc, changed=False)
    except (DockerException, OSError) as exc:
        module.fail_json(msg="capturing evidence failed: %s" % one_line(exc), changed=os.path.exists(evidence))
    finally:
        client.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
