# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bringing compose services up or down and waiting for them, shared by the modules that do it.

Always the real `docker compose` CLI (argument lists, named services only, never pull, never
build); readiness is polled through the Docker SDK with a deadline, never slept for.
"""

from __future__ import annotations

import contextlib
import re
import time

from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    failed_for_good,
    project_containers,
    services_problems,
)

POLL_INTERVAL_S = 0.1
# `docker compose up --dry-run` prints one line per resource, e.g. "Container shop-app-1  Recreate".
_DRY_RUN_LINE = re.compile(r"Container\s+(\S+)\s+(Recreate|Create|Starting|Start)\b")
# During a recreate compose renames the old container "<id prefix>_<name>": not a step of its own.
_RENAMED_CONTAINER = re.compile(r"^[0-9a-f]{12}_")
_DRY_RUN_VERBS = {"Recreate": "recreate", "Create": "create", "Starting": "start", "Start": "start"}


def brief(containers):
    return [{"id": c["id"], "state": c["state"], "health": c["health"], "image_id": c["image_id"]}
            for c in containers]


def up_arguments(services, recreate="auto", dependencies=False, remove_orphans=False, stop_timeout=None,
                 dry_run=False):
    args = ["--dry-run"] if dry_run else []
    args += ["up", "--detach", "--no-build", "--pull", "never"]
    if not dependencies:
        args.append("--no-deps")
    if recreate == "always":
        args.append("--force-recreate")
    elif recreate == "never":
        args.append("--no-recreate")
    if remove_orphans:
        args.append("--remove-orphans")
    if stop_timeout is not None:
        args += ["--timeout", str(stop_timeout)]
    return args + ["--"] + list(services)


def service_of_container(project, container_name):
    """`<project>-<service>-<n>` (compose v2 naming) -> service, so a plan reads like a real run."""
    for service in project.services:
        if re.match(r"^%s-%s-\d+$" % (re.escape(project.name), re.escape(service)), container_name):
            return service
    return container_name


def dry_run_plan(project, services, **options):
    """Compose's own plan (`up --dry-run`): the services it would create, recreate or start."""
    run = project.run_result(up_arguments(services, dry_run=True, **options))
    planned = []
    for line in (run["stdout"] + "\n" + run["stderr"]).splitlines():
        match = _DRY_RUN_LINE.search(line)
        if match and not _RENAMED_CONTAINER.match(match.group(1)):
            step = "%s %s" % (_DRY_RUN_VERBS[match.group(2)], service_of_container(project, match.group(1)))
            if step not in planned:
                planned.append(step)
    return planned, run


def wait_ready(client, project_name, services, timeout):
    """Poll until every container of `services` is ready, one fails for good, or the deadline.

    Returns (ready, {service: why not}, seconds waited).
    """
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


def bring_up(project, client, services, wait=True, wait_timeout=120, **options):
    """`docker compose up` for `services`, then wait; a result dict with what changed.

    options: recreate (auto|always|never), dependencies, remove_orphans, stop_timeout.
    Raises ComposeError when compose itself fails; readiness is reported in `ready`/`not_ready`.
    """
    before = project_containers(client, project.name)
    result = project.run_result(up_arguments(services, **options))
    result.update(actions=[], not_ready={}, wait_s=0.0)
    if wait:
        result["ready"], result["not_ready"], waited = wait_ready(client, project.name, services, wait_timeout)
        result["wait_s"] = round(waited, 2)
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
    result["diff"] = dict(before=_containers_text(report, "before"), after=_containers_text(report, "after"))
    return result


def _containers_text(report, side):
    return "".join("%s: %s\n" % (name, [(c["id"][:12], c["state"]) for c in entry[side]])
                   for name, entry in sorted(report.items()))


def not_ready_msg(result):
    return "services not ready after %.1f s: %s" % (result["wait_s"], "; ".join(
        "%s: %s" % item for item in sorted(result["not_ready"].items())))


# Containers a stop must end: a crash-looping one is "restarting" most of the time, and a paused
# one still holds its files and connections.
STOPPABLE_STATES = ("running", "restarting", "paused")


# The clients stopped around a change of what they use: not a paused one, which writes nothing
# meanwhile, and which starting again would unpause.
CLIENT_STATES = ("running", "restarting")


def to_stop(project, client, services, states=STOPPABLE_STATES):
    """Those among `services` with a container in one of `states`, in the order given."""
    before = project_containers(client, project.name)
    return [s for s in services if any(c["state"] in states for c in before.get(s, []))]


def stop_services(project, services, stop_timeout=None):
    """`docker compose stop` of `services` (a list that is not empty); cmd, rc, stdout, stderr."""
    args = ["stop"]
    if stop_timeout is not None:
        args += ["--timeout", str(stop_timeout)]
    return project.run_result(args + ["--"] + list(services))


def stop(project, client, services, stop_timeout=None, check_mode=False, states=STOPPABLE_STATES):
    """Stop those among `services` with a container in one of `states`; a result dict with the actions."""
    running = to_stop(project, client, services, states)
    result = dict(changed=bool(running), actions=["stop %s" % s for s in running])
    if running and not check_mode:
        result.update(stop_services(project, running, stop_timeout))
    return result


@contextlib.contextmanager
def stopped_while(project, client, services, report, stop_timeout=None, wait_timeout=120):
    """Stop the running ones among `services` for the duration of the block, then start them again.

    They are started again also when the block fails (the data they use was left as it
    was). `report` receives `clients_stopped`, `clients_downtime_s` and `clients_ready`.
    Starting them again must succeed: a failure to start raises ComposeError after the block.
    """
    names = to_stop(project, client, services, states=CLIENT_STATES)
    if names:
        stop_services(project, names, stop_timeout)
    report["clients_stopped"] = names
    started = time.monotonic()
    try:
        yield
    finally:
        if names:
            up = bring_up(project, client, names, recreate="never", wait_timeout=wait_timeout)
            report["clients_downtime_s"] = round(time.monotonic() - started, 2)
            report["clients_ready"] = up.get("ready")
            report["clients_not_ready"] = up.get("not_ready")
