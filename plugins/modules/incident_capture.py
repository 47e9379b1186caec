#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: incident_capture
short_description: Capture the diagnostics of a Docker Compose project into an incident folder, and record how it ended
version_added: 0.2.0
description:
  - O(state=capture) writes what the project looks like now into a new folder C(<incident_root>/<UTC ts>-<kind>/)
    before anything is changed - each container's state, exit code, health log, OOM kill and restart count (never
    its environment), the last O(log_lines) lines of each container's log, CPU and memory use of the running
    containers (the numbers C(docker stats --no-stream) shows), a C(compose-ps.txt) table - and a C(SHA256SUMS)
    file over all of them.
  - Every Docker call is bounded by O(timeout_s); usage is sampled in parallel under the same deadline. A dead,
    exited or vanished container, or an engine that stops answering, is noted in the C(errors) of RV(summary), never a failure.
  - Diagnostics that cannot be written (a full disk, a read-only backup mount) are not a failure either - RV(capture_error)
    says why, and the project's services are returned all the same, so that the stop or recovery they come before goes on.
  - O(state=record) ends an emergency procedure - it checks how the O(shutdown_services) ended (exit code, and
    PostgreSQL's C(database system is shut down) line for a clean shutdown), writes C(record.json) into the incident
    folder, refreshes its C(SHA256SUMS) and appends one JSON line (C(kind=emergency)) to the project's audit log,
    the one the rollback orchestrator writes (see M(lastgood.rollback.rollback_run)).
  - Break-glass - the project's rollback lock is neither waited for nor taken; who held it is written into the
    record and the audit line.
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
      - Reads the containers as for a real run and returns the summary and the folder that would be written;
        writes no file and no audit line.
  diff_mode:
    support: none
options:
  state:
    description: V(capture) the diagnostics, or V(record) the end of the procedure.
    type: str
    choices: [capture, record]
    default: capture
  kind:
    description: What happened, part of the folder name (lower-case letters, digits, C(-)).
    type: str
    default: emergency
  incident_root:
    description: Where incident folders are created. Default - C(<backup_root>/<project>/incidents).
    type: path
  incident_dir:
    description:
      - With O(state=record), the folder O(state=capture) created (RV(incident_dir)). Empty when the capture could not
        write one - the audit line is then written alone.
    type: path
  log_lines:
    description: Lines of each container's log to keep.
    type: int
    default: 200
  timeout_s:
    description: Deadline of each Docker call, and of the usage samples together.
    type: float
    default: 10
  action:
    description: With O(state=record), the procedure (C(stop), C(recover), ...), for the audit line.
    type: str
    default: stop
  result:
    description: With O(state=record), how it ended.
    type: str
    choices: [success, failed, planned]
    default: success
  reason:
    description: With O(state=record), why the procedure ran.
    type: str
    default: ""
  user:
    description: With O(state=record), who started it.
    type: str
  note:
    description: With O(state=record), one line for the audit log and the record (its C(message)).
    type: str
    default: ""
  started_at:
    description: With O(state=record), when the procedure began (UNIX seconds); for the duration.
    type: float
  details:
    description: With O(state=record), more keys for the record and the audit line (durations, snapshot, data-loss window).
    type: dict
    default: {}
  shutdown_services:
    description:
      - With O(state=record), services whose shutdown is checked (the data services) - RV(shutdown).
    type: list
    elements: str
    default: []
  require_clean_shutdown:
    description:
      - With O(state=record), fail when one of O(shutdown_services) still runs or ended with a non-zero exit code
        (the record and the audit line are written first).
    type: bool
    default: false
  audit_log:
    description: The audit log. Defaults to C(<backup_root>/<project>/audit.jsonl).
    type: path
requirements:
  - The Docker SDK for Python (C(docker)).
  - The C(docker compose) v2 CLI when O(project_dir) is given (reads the project's services).
"""

EXAMPLES = r"""
- name: Keep what the stack looks like before stopping it
  lastgood.rollback.incident_capture:
    project_dir: /srv/shop
    kind: emergency-stop
    timeout_s: 5
  register: incident

- name: Record the stop in the audit log and the incident folder
  lastgood.rollback.incident_capture:
    project_dir: /srv/shop
    state: record
    incident_dir: "{{ incident.incident_dir }}"
    action: stop
    result: success
    shutdown_services: [db]
    details:
      stop_s: 12.4
"""

RETURN = r"""
project_name:
  description: The compose project.
  returned: always
  type: str
incident_dir:
  description: The incident folder (written, or that would be written in check mode); empty when none could be written.
  returned: always
  type: str
capture_error:
  description:
    - With O(state=capture), why the diagnostics could not be written (a full disk, a read-only or missing backup
      mount), else empty. Not a failure - the procedure the diagnostics come before must go on; a warning says it too.
  returned: when O(state=capture)
  type: str
record_error:
  description: With O(state=record), what of the record and the audit line could not be written (also a warning), else empty.
  returned: when O(state=record) and not in check mode
  type: str
summary:
  description:
    - With O(state=capture), what was captured - C(containers) (state, exit_code, health, oom_killed, restart_count,
      usage), C(running), C(not_running), C(services), C(services_without_container), C(errors), C(capture_s), C(files).
  returned: when O(state=capture)
  type: dict
services:
  description: The project's services (from its compose configuration, else from its containers).
  returned: always
  type: list
  elements: str
shutdown:
  description: With O(state=record), per service in O(shutdown_services), its containers' state, exit code and C(clean).
  returned: when O(state=record)
  type: dict
clean_shutdown:
  description: With O(state=record), whether every container of O(shutdown_services) stopped and none ended badly.
  returned: when O(state=record)
  type: bool
audit:
  description: With O(state=record), the audit line (written unless in check mode).
  returned: when O(state=record)
  type: dict
lock_holder:
  description: Who held the project's rollback lock (not waited for), or null.
  returned: always
  type: dict
"""

import json
import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils import _emergency
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_LOOKUP_ARGUMENT_SPEC,
    PROJECT_LOOKUP_REQUIRED_ONE_OF,
    load_project,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import DockerException, docker_client, one_line
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    ManifestError,
    project_root,
    utc_now,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import AUDIT, LOCK, append_line, audit_line, read_json


def capture(module, client, project_name, services, root):
    params = module.params
    incident_root = params["incident_root"] or os.path.join(root, "incidents")
    directory = None
    try:
        directory = _emergency.new_incident_dir(incident_root, params["kind"], utc_now(), check_mode=module.check_mode)
        summary = _emergency.capture(client, project_name, services, directory, params["log_lines"], params["timeout_s"],
                                     write=not module.check_mode)
    except OSError as exc:
        # The diagnostics never hold up the stop or the recovery that follows them (a full disk
        # is one reason to stop a stack): what could not be written is said, and the caller goes on.
        error = "diagnostics not written: %s" % one_line(exc)
        module.warn(error)
        written = directory if directory and os.path.isdir(directory) else ""
        return dict(changed=bool(written) and not module.check_mode, incident_dir=written, capture_error=error,
                    summary=dict(services=services, not_running=[], errors=[error]))
    return dict(changed=not module.check_mode, incident_dir=directory, summary=summary, capture_error="")


def record(module, client, project_name, root, holder):
    params = module.params
    directory = params["incident_dir"] or ""
    if directory and not os.path.isdir(directory) and not module.check_mode:
        raise _emergency.EmergencyError("incident_dir %s is not a folder (give the one state=capture created, or none)"
                                        % directory)
    shutdown = _emergency.shutdown_report(client, project_name, params["shutdown_services"]) if params["shutdown_services"] else {}
    missing = sorted(set(params["shutdown_services"]) - set(shutdown))
    clean = not missing and all(entry["clean"] is not False for entries in shutdown.values() for entry in entries)
    started = params["started_at"] or time.time()
    details = dict(params["details"] or {}, incident_dir=directory, shutdown=shutdown, clean_shutdown=clean,
                   lock_holder=holder)
    line = audit_line(project_name, "emergency", params["action"], params["result"], started, socket.gethostname(),
                      params["user"], params["reason"], params["note"], details)
    result = dict(changed=not module.check_mode, incident_dir=directory, shutdown=shutdown, clean_shutdown=clean, audit=line)
    if not module.check_mode:
        # What the procedure did is done: a record that cannot be written is said, not a failure.
        errors = []
        if directory:
            try:
                _emergency.write_file(directory, _emergency.RECORD, json.dumps(line, indent=2, sort_keys=True) + "\n")
                _emergency.write_sums(directory)
            except OSError as exc:
                errors.append("record.json not written: %s" % one_line(exc))
        try:
            append_line(params["audit_log"] or os.path.join(root, AUDIT), line)
        except OSError as exc:
            errors.append("audit line not written: %s" % one_line(exc))
        for error in errors:
            module.warn(error)
        result["record_error"] = "; ".join(errors)
    if params["require_clean_shutdown"] and not clean:
        bad = missing + sorted(name for name, entries in shutdown.items() if any(e["clean"] is False for e in entries))
        result["failed"] = True
        result["msg"] = "data service(s) did not shut down cleanly: %s (see %s)" % (", ".join(bad), directory)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **PROJECT_LOOKUP_ARGUMENT_SPEC,
            **BACKUP_ROOT_ARGUMENT_SPEC,
            state=dict(type="str", default="capture", choices=["capture", "record"]),
            kind=dict(type="str", default="emergency"),
            incident_root=dict(type="path"),
            incident_dir=dict(type="path"),
            log_lines=dict(type="int", default=200),
            timeout_s=dict(type="float", default=10),
            action=dict(type="str", default="stop"),
            result=dict(type="str", default="success", choices=["success", "failed", "planned"]),
            reason=dict(type="str", default=""),
            user=dict(type="str"),
            note=dict(type="str", default=""),
            started_at=dict(type="float"),
            details=dict(type="dict", default={}),
            shutdown_services=dict(type="list", elements="str", default=[]),
            require_clean_shutdown=dict(type="bool", default=False),
            audit_log=dict(type="path"),
        ),
        required_one_of=PROJECT_LOOKUP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params = module.params
    if params["log_lines"] < 0 or params["timeout_s"] <= 0:
        module.fail_json(msg="log_lines must be >= 0 and timeout_s positive")
    services = []
    if params["project_dir"]:
        project = load_project(module, params)
        project_name, services = project.name, sorted(project.services)
    else:
        project_name = params["project_name"]
    client = docker_client(module, timeout=params["timeout_s"])
    try:
        root = project_root(params["backup_root"], project_name)
        _emergency.check_kind(params["kind"])
        holder = read_json(os.path.join(root, LOCK))
        if not services:
            services = sorted(set(c["service"] for _cid, c in _emergency.list_project_containers(client, project_name) if c["service"]))
        if params["state"] == "capture":
            result = capture(module, client, project_name, services, root)
        else:
            result = record(module, client, project_name, root, holder)
    except (_emergency.EmergencyError, ManifestError) as exc:
        module.fail_json(msg=str(exc))
    except (DockerException, OSError) as exc:
        module.fail_json(msg="incident %s failed: %s" % (params["state"], one_line(exc)))
    result.update(project_name=project_name, services=services, lock_holder=holder)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
