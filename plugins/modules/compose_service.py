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
    wait at once; one its restart policy brings back (C(restarting), a crash while what it needs comes up)
    is waited for until the deadline.
  - O(state=stopped) stops the named services within O(stop_timeout) - those whose container runs, restarts (a crash
    loop) or is paused; a service already exited is left as it is.
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
      - Returns the plan of C(docker compose up --dry-run) (or, for O(state=stopped), the running, restarting or
        paused services that would stop); changes nothing.
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils import _services
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_ARGUMENT_SPEC,
    ComposeError,
    fail_compose,
    load_project,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client


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
    up_options = dict(recreate=params["recreate"], dependencies=params["dependencies"],
                      remove_orphans=params["remove_orphans"], stop_timeout=params["stop_timeout"])

    try:
        if params["state"] == "stopped":
            result = _services.stop(project, client, services, params["stop_timeout"], module.check_mode)
        elif module.check_mode:
            actions, run = _services.dry_run_plan(project, services, **up_options)
            result = dict(run, changed=bool(actions), actions=actions)
        else:
            result = _services.bring_up(project, client, services, wait=params["wait"],
                                        wait_timeout=params["wait_timeout"], **up_options)
    except ComposeError as exc:
        fail_compose(module, exc)
    result.setdefault("not_ready", {})
    result.setdefault("wait_s", 0.0)
    if result.get("ready") is False:
        module.fail_json(msg=_services.not_ready_msg(result), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
