# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/deploy.yml on a release whose container crashes as it starts, under a restart
policy (the host's compose.override.yaml: `restart: on-failure`), on a real engine and compose.

A crash its restart policy brings back counts as a start, as refused connections do, until the
deploy's startup allowance (lastgood_deploy_startup_s) has passed: a service may crash until what
it needs is up. A crash loop that outlasts the allowance fails the watch and is rolled back; the
rollback then waits out the restored release's own restarts. (A crash with no restart policy
counts at once: test_deploy.py.)"""

from __future__ import annotations

import pytest

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

WATCH = {"lastgood_watch_s": 4, "lastgood_watch_interval_s": 0.5, "lastgood_watch_failures": 3}

# The app, started APP_CRASHES times before it runs: each start of the container counts itself in
# the container's own /tmp, which a restart keeps and a recreation does not.
CRASHING_START = ("n=$(cat /tmp/starts 2>/dev/null || echo 0); echo $((n + 1)) > /tmp/starts;"
                  " if [ \"$n\" -lt \"${APP_CRASHES:-0}\" ]; then echo \"app: start $((n + 1)) fails\" >&2; exit 1; fi;"
                  " exec python3 -I /opt/lastgood-demo/app.py")

OVERRIDE = """\
services:
  app:
    restart: on-failure
    environment:
      APP_CRASHES: ${APP_CRASHES:-0}
"""


@pytest.fixture(scope="module")
def crashing(module_stack, docker_client, tmp_path_factory):
    with ansible_run.stack_host(module_stack(), tmp_path_factory.mktemp("crash-loop"), docker_client, **WATCH) as found:
        project = found.stack.project
        (found.stack.dir / "compose.override.yaml").write_text(OVERRIDE)
        found.images.append(ansible_run.throwaway_image(docker_client, stacks.APP_V1, "lastgood-test/app", project + "-crashing",
                                                        project, command=["sh", "-c", CRASHING_START]))
        found.image = "lastgood-test/app:%s-crashing" % project
        yield found


def restarts(found):
    return found.stack.container("app").attrs["RestartCount"]


def test_a_release_that_crashes_until_it_can_start_is_watched_once_it_answers(crashing):
    """Four crashes, each brought back by the restart policy, then the app runs: a start."""
    run = ansible_run.run_deploy(crashing.inventory, {"APP_IMAGE": crashing.image, "APP_CRASHES": "4"})
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["result"] == "success" and outcome["verdict"] == "healthy", outcome
    assert outcome["promoted"], outcome
    assert restarts(crashing) == 4, "the release did not crash as it started"
    assert crashing.stack.get_json("app", "/health")[0] == 200


def test_a_crash_loop_that_outlasts_the_startup_allowance_is_rolled_back(crashing):
    """It never runs: once the 2 s allowance has passed, its crashes fail the watch. The rollback
    puts back the release before (the same image, four crashes) and waits out its restarts."""
    run = ansible_run.run_deploy(crashing.inventory, {"APP_CRASHES": "1000"}, lastgood_deploy_startup_s=2)
    assert run.rc != 0
    outcome = run.outcome()
    assert outcome["result"] == "rolled_back" and outcome["verdict"] == "failed", outcome
    assert "failed its watch" in outcome["why"], outcome["why"]
    assert ansible_run.env_file_value(crashing.stack.dir, "APP_CRASHES") == "4"
    assert crashing.stack.get_json("app", "/health")[0] == 200
    assert restarts(crashing) == 4


def test_a_service_wait_waits_out_restarts_until_its_deadline(crashing, tmp_path):
    """compose_service's wait: restarts until the app runs are waited out; a crash loop ends the
    wait at its deadline, not at the first crash (the engine shows the container `unhealthy` then)."""
    args = {"project_dir": str(crashing.stack.dir), "services": ["app"], "recreate": "always", "wait_timeout": 60}
    run = ansible_run.run_module(crashing.inventory, "compose_service", args, tmp_path)
    assert run.rc == 0, run.describe()
    assert run.result()["ready"] is True and restarts(crashing) == 4

    env_file = crashing.stack.dir / ".env"
    good = env_file.read_text()
    assert "\nAPP_CRASHES=4\n" in good, "the release of the first test is not the one running"
    env_file.write_text(good.replace("\nAPP_CRASHES=4\n", "\nAPP_CRASHES=1000\n"))
    try:
        run = ansible_run.run_module(crashing.inventory, "compose_service", dict(args, wait_timeout=3), tmp_path)
        assert run.rc != 0
        result = run.result()
        assert result["msg"].startswith("services not ready after 3."), result["msg"]
        assert result["not_ready"]["app"] in ("restarting", "starting"), result["not_ready"]  # between two crashes, or in one run
    finally:
        env_file.write_text(good)
    run = ansible_run.run_module(crashing.inventory, "compose_service", args, tmp_path)
    assert run.rc == 0 and restarts(crashing) == 4, run.describe()


def test_the_watch_of_every_container_counts_a_restart_as_a_start_too(crashing):
    """deploy_watch_containers: the check that every container runs and is healthy sees the app
    `restarting` through its first six starts (6.3 s of the engine's backoff); that is a start as
    well, not a failed round."""
    run = ansible_run.run_deploy(crashing.inventory, {"APP_IMAGE": crashing.image, "APP_CRASHES": "6"},
                                 deploy_watch_containers=True)
    assert run.rc == 0, run.describe()
    assert run.outcome()["result"] == "success", run.outcome()
    assert restarts(crashing) == 6
