# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""lastgood.rollback.health_check run through ansible-playbook against a real demo stack
(Docker engine, PostgreSQL 15, the demo app and its broken v2 release), all on 127.0.0.1."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from . import stacks
except ImportError:
    import stacks

BIN = Path(sys.executable).parent
COLLECTION_LINK = stacks.REPO_ROOT / ".collections" / "ansible_collections" / "lastgood" / "rollback"
RESULT_LINE = re.compile(r"^(ok|changed|fatal): \[localhost\].*? => ", re.MULTILINE)


@pytest.fixture(scope="session", autouse=True)
def collection_link():
    """ansible.cfg reads collections from ./.collections: link this checkout there if missing."""
    if not COLLECTION_LINK.exists():
        COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
        COLLECTION_LINK.symlink_to(Path("..", "..", ".."))
    assert (COLLECTION_LINK / "plugins" / "modules" / "health_check.py").is_file()


class HealthCheckRun:
    """One ansible-playbook run: the process, the task's status (ok, fatal) and its result."""

    def __init__(self, proc, status, result):
        self.proc = proc
        self.status = status
        self.result = result
        self.output = proc.stdout + proc.stderr


def start_health_check(tmp_path, args, env=None, verbosity=1):
    """Start ansible-playbook with one health_check task taking `args`; returns the Popen.

    The arguments travel in a 0600 extra-vars file, never on a command line; the task
    templates each option from it.
    """
    workdir = Path(tmp_path) / ("hc-%s" % secrets.token_hex(3))
    workdir.mkdir()
    args_file = workdir / "args.json"
    args_file.write_text(json.dumps({"hc_args": args}))
    args_file.chmod(0o600)
    task_args = {key: "{{ hc_args[%r] }}" % key for key in args}
    playbook = workdir / "playbook.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "health check", "lastgood.rollback.health_check": task_args}],
    }]))
    run_env = {k: v for k, v in stacks.clean_env().items() if k != "PGPASSWORD"}
    run_env.update(ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    run_env.update(env or {})
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable,
           "-e", "@%s" % args_file, str(playbook), "-" + "v" * verbosity]
    return subprocess.Popen(cmd, cwd=stacks.REPO_ROOT, env=run_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_health_check(popen, timeout=120):
    stdout, stderr = popen.communicate(timeout=timeout)
    proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
    match = RESULT_LINE.search(stdout)
    assert match, "no task result in the output:\n%s\n%s" % (stdout, stderr)
    result = json.JSONDecoder().raw_decode(stdout[match.end():])[0]
    return HealthCheckRun(proc, match.group(1), result)


def health_check(tmp_path, args, env=None, verbosity=1, timeout=120):
    return finish_health_check(start_health_check(tmp_path, args, env, verbosity), timeout)


def checks_by_name(result):
    return {check["name"]: check for check in result["checks"]}


def test_every_check_type_against_the_demo_stack(stack, tmp_path):
    s = stack()
    args = dict(
        checks=[
            dict(name="app", url=s.url("app", "/health"), body_regex=r'"status":\s*"ok"', max_latency_ms=1000),
            dict(name="static", url=s.url("static", "/")),
            dict(name="db-port", port=s.ports["db"]),
            dict(name="db", type="postgres", port=s.ports["db"], database="app", password=s.password),
            dict(name="stack", type="container", project_dir=str(s.dir)),
            dict(name="app-db", type="container", project_name=s.project, services=["app", "db"]),
        ],
        retries=10, interval_s=0.2, deadline_s=30, consecutive_successes=2,
    )
    run = health_check(tmp_path, args)
    result = run.result
    assert run.status == "ok" and run.proc.returncode == 0, run.output
    assert result["healthy"] is True and result["changed"] is False
    assert result["rounds"] == 2 and result["history"] == [[], []]
    assert result["msg"].startswith("healthy: 6/6 checks ok after 2 rounds (")
    checks = checks_by_name(result)
    assert checks["app"]["status"] == 200
    containers = {(c["service"], c["state"], c["health"]) for c in checks["stack"]["containers"]}
    assert containers == {("app", "running", "healthy"), ("db", "running", "healthy"),
                          ("static", "running", "healthy")}
    assert [c["name"] for c in checks["app-db"]["containers"]] == ["%s-app-1" % s.project, "%s-db-1" % s.project]

    # A stopped service, a wrong password: reported per check, the task does not fail.
    s.compose("stop", "static")
    args["checks"][3]["password"] = "not-the-password"
    args.update(retries=0, consecutive_successes=1, fail_on_unhealthy=False)
    run = health_check(tmp_path, args)
    assert run.status == "ok" and run.proc.returncode == 0, run.output
    result = run.result
    assert result["healthy"] is False
    checks = checks_by_name(result)
    assert checks["static"]["error"] == "connection refused"
    assert re.fullmatch(r"%s-static-1 is exited \(exit code \d+\)" % s.project, checks["stack"]["error"])
    assert checks["db"]["error"] == 'FATAL: password authentication failed for user "postgres"'
    assert checks["app-db"]["ok"] and checks["app"]["ok"] and checks["db-port"]["ok"]
    assert result["history"] == [["static", "db", "stack"]]


def test_password_and_headers_never_in_output_even_with_vvv(stack, tmp_path):
    secret = "hc-secret-%s" % secrets.token_hex(8)
    s = stack(extra_env={"POSTGRES_PASSWORD": secret})
    db = dict(name="db", type="postgres", port=s.ports["db"], database="app")

    # A request header is a secret too (an Authorization for a Prometheus behind a proxy).
    app = dict(name="app", url=s.url("app", "/health"), headers={"Authorization": "Bearer %s-header" % secret})
    by_option = health_check(tmp_path, dict(checks=[dict(db, password=secret), app]), verbosity=3)
    assert by_option.result["healthy"] is True, by_option.output
    by_env = health_check(tmp_path, dict(checks=[db]), env={"PGPASSWORD": secret}, verbosity=3)
    assert by_env.result["healthy"] is True, by_env.output
    wrong = health_check(tmp_path, dict(checks=[dict(db, password=secret + "-wrong")]), verbosity=3)
    assert wrong.result["healthy"] is False and wrong.status == "fatal"
    assert "password authentication failed" in wrong.result["msg"]

    for run in (by_option, by_env, wrong):
        assert "<localhost> EXEC" in run.output  # really -vvv
        assert secret not in run.output
    invocation_check = by_option.result["invocation"]["module_args"]["checks"][0]
    assert invocation_check["password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert by_option.result["invocation"]["module_args"]["checks"][1]["headers"] == {
        "Authorization": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}


def test_watch_catches_a_bad_release_and_the_wait_reports_it(stack, tmp_path):
    s = stack()
    app = dict(name="app", url=s.url("app", "/health"), timeout_s=1)
    started = time.monotonic()
    watch = start_health_check(tmp_path, dict(
        checks=[app, dict(name="db", port=s.ports["db"])],
        watch_s=60, interval_s=0.25, consecutive_failures=2, fail_on_unhealthy=False))
    # Let the watch see the good release for a few rounds (ansible starts in about 1 s).
    stacks.wait_until(lambda: time.monotonic() - started > 3, timeout=5)
    s.tag_app(stacks.APP_V2)
    s.compose("up", "-d", "app")
    run = finish_health_check(watch)
    result = run.result
    assert run.status == "ok" and run.proc.returncode == 0, run.output
    assert result["healthy"] is False
    assert result["elapsed_s"] < 30, "the bad release was not caught early: %s" % result["msg"]
    assert result["history"][0] == [] and result["history"][-2:] == [["app"], ["app"]]
    assert result["first_ok_after_s"] is not None
    assert checks_by_name(result)["app"]["error"] in ("connection refused", "HTTP 500 (expected 200)")
    assert checks_by_name(result)["db"]["ok"] is True

    # Waiting on v2: the app answers, but 500; the deadline ends the wait.
    run = health_check(tmp_path, dict(checks=[app], retries=100, interval_s=0.2, deadline_s=3))
    assert run.status == "fatal" and run.proc.returncode != 0
    assert run.result["checks"][0]["error"] == "HTTP 500 (expected 200)"
    assert run.result["msg"].startswith("unhealthy: app: HTTP 500 (expected 200) (")
    assert run.result["msg"].endswith("deadline 3.0 s reached)")
    assert 3.0 <= run.result["elapsed_s"] < 3.0 + 1 + 0.5

    # Docker's own healthcheck marks the container unhealthy: the container check says so.
    s.wait_health("app", "unhealthy", timeout=60)
    run = health_check(tmp_path, dict(
        checks=[dict(name="app-container", type="container", project_dir=str(s.dir), services=["app"])],
        fail_on_unhealthy=False))
    assert run.result["checks"][0]["error"] == "%s-app-1 is unhealthy" % s.project


SLOW_START_COMPOSE = """\
services:
  slow:
    image: lastgood-bench/busybox:1
    command: ["sleep", "300"]
    network_mode: host
    healthcheck:
      test: ["CMD", "test", "-f", "/ready"]
      interval: 200ms
      timeout: 1s
      retries: 3
      start_period: 120s
"""


def test_the_wait_sees_a_starting_container_turn_healthy_without_waiting_out_the_interval(tmp_path):
    """A container whose Docker healthcheck is still `starting` (a service just recreated): the
    gate asks the engine every 50 ms instead of sleeping its whole interval (20 s here), so it ends
    right after the engine reports the container healthy, in its second round."""
    project = "lgthc%s" % secrets.token_hex(3)
    project_dir = tmp_path / project
    project_dir.mkdir()
    (project_dir / "compose.yaml").write_text(SLOW_START_COMPOSE)

    def compose(*args):
        return stacks.run(["docker", "compose", "-p", project] + list(args), cwd=project_dir)

    compose("up", "-d")
    try:
        gate = start_health_check(tmp_path, dict(
            checks=[dict(name="slow", type="container", project_name=project)],
            retries=100, interval_s=20, deadline_s=60))
        # The gate's first round sees `starting` (ansible starts in about 1 s); then the container gets ready.
        time.sleep(4)
        compose("exec", "-T", "slow", "touch", "/ready")
        ready_at = time.monotonic()
        run = finish_health_check(gate)
        seen_after_s = time.monotonic() - ready_at
        result = run.result
        assert run.status == "ok" and result["healthy"] is True, run.output
        assert result["rounds"] == 2 and result["history"] == [["slow"], []], result
        assert result["elapsed_s"] < 10, result["msg"]
        # Docker checks every 200 ms; the gate looks every 50 ms; the rest is ansible ending.
        assert seen_after_s < 3, seen_after_s
    finally:
        compose("down", "--timeout", "0")
