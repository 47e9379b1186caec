#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_service
short_description: Start, recreate or stop only the named services of a Docker Compose project
version_added: 0.1.0
description:
  - Runs the real C(docker compose) v2 CLI as an argument list, for the named services only
    (C(--no-deps) unless O(dependencies=true)), never pulling and never building.
  - O(state=present) brings the services up. O(recreate=auto) leaves compose to recreate what changed
    (configuration or image); O(recreate=always) recreates the named services; O(recreate=never) only
    starts what is stopped.
  - Then waits, polling every 0.1 s until a deadline, for every container of those services to run and,
    when it has a Docker healthcheck, to be healthy. A container that exits or turns unhealthy ends the
    wait at once.
  - O(state=stopped) stops the named services within O(stop_timeout).
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.project
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Returns the plan of C(docker compose up --dry-run) (or, for O(state=stopped), the running services
        that would stop); changes nothing.
  diff_mode:
    support: full
    details:
      - Shows the container ID and state of each service before and after.
options:
  services:
    description:
      - Services to act on. Defaults to every service of the project.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(present) brings services up, V(stopped) stops them.
    type: str
    choices: [present, stopped]
    default: present
  recreate:
    description:
      - With O(state=present), when to recreate containers.
    type: str
    choices: [auto, always, never]
    default: auto
  dependencies:
    description:
      - Also act on the services the named ones depend on.
    type: bool
    default: false
  remove_orphans:
    description:
      - Remove containers of services no longer in the compose files (C(--remove-orphans)).
    type: bool
    default: false
  wait:
    description:
      - Wait for the services to run and be healthy after bringing them up.
    type: bool
    default: true
  wait_timeout:
    description:
      - Deadline in seconds for O(wait).
    type: float
    default: 120
  stop_timeout:
    description:
      - Seconds each container gets to stop before it is killed (C(--timeout)).
      - Defaults to each service's C(stop_grace_period).
    type: int
"""

EXAMPLES = r"""
- name: Recreate only the service whose image was rolled back, and wait until it is healthy
  lastgood.rollback.compose_service:
    project_dir: /srv/shop
    services: [app]
    recreate: always
    wait_timeout: 60

- name: Bring the stack up, letting compose recreate what changed
  lastgood.rollback.compose_service:
    project_dir: /srv/shop

- name: Stop the application before restoring its database
  lastgood.rollback.compose_service:
    project_dir: /srv/shop
    services: [app, worker]
    state: stopped
"""

RETURN = r"""
services:
  description: Per service, the containers before and after, and whether they were recreated or started.
  returned: when O(state=present) and not in check mode
  type: dict
  sample:
    app:
      before: [{id: 9b1c..., state: running, image_id: sha256:9d1e...}]
      after: [{id: 2c7a..., state: running, image_id: sha256:4f5e..., health: healthy}]
      recreated: true
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
ready:
  description: Whether every container of the services runs and is healthy (after waiting).
  returned: when O(state=present) and O(wait=true) and not in check mode
  type: bool
not_ready:
  description: Per service, why it is not ready (empty when all are).
  returned: always
  type: dict
wait_s:
  description: Seconds spent waiting for readiness.
  returned: always
  type: float
cmd:
  description: The compose command run (or dry-run in check mode).
  returned: when a command ran
  type: list
  elements: str
stdout:
  description: Its standard output.
  returned: when a command ran
  type: str
stderr:
  description: Its standard error.
  returned: when a command ran
  type: str
"""

import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_ARGUMENT_SPEC,
    ComposeError,
    fail_compose,
    load_project,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    docker_client,
    failed_for_good,
    project_containers,
    services_problems,
)

POLL_INTERVAL_S = 0.1
# `docker compose up --dry-run` prints one line per resource, e.g. "Container shop-app-1  Recreate".
_DRY_RUN_LINE = re.compile(r"Container\s+(\S+)\s+(Recreate|Create|Starting|Start)\b")
_RENAMED_CONTAINER = re.compile(r"^[0-9a-f]{12}_")
_DRY_RUN_VERBS = {"Recreate": "recreate", "Create": "create", "Starting": "start", "Start": "start"}


def brief(containers):
    return [{"id": c["id"], "state": c["state"], "health": c["health"], "image_id": c["image_id"]}
            for c in containers]


def up_arguments(params, services, dry_run=False):
    args = ["--dry-run"] if dry_run else []
    args += ["up", "--detach", "--no-build", "--pull", "never"]
    if not params["dependencies"]:
        args.append("--no-deps")
    if params["recreate"] == "always":
        args.append("--force-recreate")
    elif params["recreate"] == "never":
        args.append("--no-recreate")
    if params["remove_orphans"]:
        args.append("--remove-orphans")
    if params["stop_timeout"] is not None:
        args += ["--timeout", str(params["stop_timeout"])]
    return args + ["--"] + services


def service_of_container(project, container_name):
    """`<project>-<service>-<n>` (compose v2 naming) -> service, so a plan reads like a real run."""
    for service in project.services:
        if re.match(r"^%s-%s-\d+$" % (re.escape(project.name), re.escape(service)), container_name):
            return service
    return container_name


def dry_run_plan(project, params, services):
    """Compose's own plan: the services whose containers it would create, recreate or start."""
    run = project.run_result(up_arguments(params, services, dry_run=True))
    planned = []
    for line in (run["stdout"] + "\n" + run["stderr"]).splitlines():
        match = _DRY_RUN_LINE.search(line)
        # During a recreate compose renames the old container "<id prefix>_<name>": not a step of its own.
        if match and not _RENAMED_CONTAINER.match(match.group(1)):
            step = "%s %s" % (_DRY_RUN_VERBS[match.group(2)], service_of_container(project, match.group(1)))
            if step not in planned:
                planned.append(step)
    return planned, run


def wait_ready(client, project_name, services, timeout):
    """Poll until every container of `services` is ready, one fails for good, or the deadline."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        by_service = project_containers(client, project_name)
        problems = services_problems(by_service, services)
        if not problems:
            return True, {}, time.monotonic() - started
        broken = {name: problems[name] for name in problems
                  if any(failed_for_good(c) for c in by_service.get(name, []))}
        now = time.monotonic()
        if broken or now >= deadline:
            return False, broken or problems, now - started
        time.sleep(min(POLL_INTERVAL_S, deadline - now))


def main():
    argument_spec = dict(
        services=dict(type="list", elements="str", default=[]),
        state=dict(type="str", default="present", choices=["present", "stopped"]),
        recreate=dict(type="str", default="auto", choices=["auto", "always", "never"]),
        dependencies=dict(type="bool", default=False),
        remove_orphans=dict(type="bool", default=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="float", default=120),
        stop_timeout=dict(type="int"),
    )
    argument_spec.update(PROJECT_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    project = load_project(module, params)
    unknown = sorted(set(params["services"]) - set(project.services))
    if unknown:
        module.fail_json(msg="unknown service(s) in project %s: %s" % (project.name, ", ".join(unknown)))
    services = list(params["services"]) or sorted(project.services)
    client = docker_client(module)
    before = project_containers(client, project.name)
    result = dict(changed=False, actions=[], not_ready={}, wait_s=0.0)

    try:
        if params["state"] == "stopped":
            running = [s for s in services if any(c["state"] == "running" for c in before.get(s, []))]
            result["actions"] = ["stop %s" % s for s in running]
            if running and not module.check_mode:
                args = ["stop"]
                if params["stop_timeout"] is not None:
                    args += ["--timeout", str(params["stop_timeout"])]
                result.update(project.run_result(args + ["--"] + running))
            result["changed"] = bool(running)
        elif module.check_mode:
            result["actions"], run = dry_run_plan(project, params, services)
            result.update(run)
            result["changed"] = bool(result["actions"])
        else:
            result.update(project.run_result(up_arguments(params, services)))
    except ComposeError as exc:
        fail_compose(module, exc)

    if params["state"] == "present" and not module.check_mode:
        ready = True
        if params["wait"]:
            ready, result["not_ready"], waited = wait_ready(client, project.name, services, params["wait_timeout"])
            result["wait_s"] = round(waited, 2)
            result["ready"] = ready
        after = project_containers(client, project.name)
        report = {}
        for name in services:
            old, new = brief(before.get(name, [])), brief(after.get(name, []))
            recreated = [c["id"] for c in old] != [c["id"] for c in new]
            started = [c["state"] for c in old] != [c["state"] for c in new]
            if recreated:
                result["actions"].append("recreate %s" % name if old else "create %s" % name)
            elif started:
                result["actions"].append("start %s" % name)
            report[name] = dict(before=old, after=new, recreated=recreated, started=started)
        result["services"] = report
        result["changed"] = any(v["recreated"] or v["started"] for v in report.values())
        result["diff"] = dict(
            before="".join("%s: %s\n" % (n, [(c["id"][:12], c["state"]) for c in r["before"]])
                           for n, r in sorted(report.items())),
            after="".join("%s: %s\n" % (n, [(c["id"][:12], c["state"]) for c in r["after"]])
                          for n, r in sorted(report.items())),
        )
        if not ready:
            module.fail_json(
                msg="services not ready after %.1f s: %s" % (result["wait_s"], "; ".join(
                    "%s: %s" % item for item in sorted(result["not_ready"].items()))),
                **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
