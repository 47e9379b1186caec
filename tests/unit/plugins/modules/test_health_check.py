# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whole-module tests of lastgood.rollback.health_check: main() runs with patched module
arguments against real servers on 127.0.0.1 and its printed JSON result is checked."""

from __future__ import annotations

import json
import time

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.lastgood.rollback.plugins.module_utils import _docker, _health
from ansible_collections.lastgood.rollback.plugins.modules import health_check
from ansible_collections.lastgood.rollback.tests.unit.plugins.module_utils.test_health import (
    ScriptedServer,
    closed_port,
    fail_first,
    silent_listener,
)


class ModuleRun:
    """One run of main(): the parsed result, the raw stdout and the wall time in seconds."""

    def __init__(self, out, took):
        self.result = json.loads(out)
        self.out = out
        self.took = took


needs_psycopg2 = pytest.mark.skipif(not _health.HAS_PSYCOPG2, reason="psycopg2 is not installed")
needs_docker_sdk = pytest.mark.skipif(not _docker.HAS_DOCKER, reason="the Docker SDK is not installed")


@pytest.fixture
def run_module(capsys):
    def run(args):
        started = time.monotonic()
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                health_check.main()
        took = time.monotonic() - started
        return ModuleRun(capsys.readouterr().out, took)

    return run


def test_healthy(run_module):
    with ScriptedServer() as server, silent_listener() as port:
        result = run_module(dict(checks=[dict(name="app", url=server.url()),
                                         dict(name="sock", port=port)])).result
    assert result["healthy"] is True
    assert result["changed"] is False
    assert not result.get("failed")
    assert result["rounds"] == 1 and result["history"] == [[]]
    assert result["msg"].startswith("healthy: 2/2 checks ok after 1 round (")
    app, sock = result["checks"]
    assert app == dict(name="app", type="http", ok=True, latency_ms=app["latency_ms"], error=None, status=200)
    assert sock["type"] == "tcp" and sock["ok"] is True and sock["status"] is None
    assert result["first_ok_after_s"] is not None and result["elapsed_s"] >= result["first_ok_after_s"]


def test_consecutive_successes_after_failures(run_module):
    with ScriptedServer(fail_first(3)) as server:
        result = run_module(dict(checks=[dict(name="app", url=server.url())],
                                 retries=10, interval_s=0.05, consecutive_successes=2)).result
        requests = server.count
    assert result["healthy"] is True
    assert result["rounds"] == 5 and requests == 5
    assert result["history"] == [["app"], ["app"], ["app"], [], []]
    assert result["consecutive_successes"] == 2
    assert result["first_ok_after_s"] < result["elapsed_s"]


def test_unhealthy_fails_the_task(run_module):
    with ScriptedServer(fail_first(100)) as server:
        result = run_module(dict(checks=[dict(name="app-health", url=server.url())],
                                 retries=2, interval_s=0.05)).result
    assert result["failed"] is True and result["healthy"] is False and result["changed"] is False
    assert result["msg"].startswith("unhealthy: app-health: HTTP 500 (expected 200) (3 rounds in ")
    assert result["msg"].endswith(", retries exhausted)")
    assert result["checks"][0]["status"] == 500
    assert result["history"] == [["app-health"]] * 3
    assert result["first_ok_after_s"] is None


def test_unhealthy_reported_without_failing(run_module):
    result = run_module(dict(checks=[dict(name="sock", port=closed_port())],
                             fail_on_unhealthy=False)).result
    assert not result.get("failed")
    assert result["healthy"] is False
    assert result["checks"][0]["error"] == "connection refused"
    assert result["msg"] == "unhealthy: sock: connection refused (1 round in %.1f s, retries exhausted)" \
        % result["elapsed_s"]


@pytest.mark.parametrize("bad_check, message", [
    (dict(name="broken", url="htp://127.0.0.1/"), "check 'broken': malformed url: url scheme must be http or https"),
    (dict(name="broken", url="http://127.0.0.1:8080 /x"), "check 'broken': malformed url: url contains whitespace"),
    (dict(name="broken", url="http://127.0.0.1/", body_regex="[ok"), "check 'broken': invalid body_regex '[ok'"),
    (dict(name="app", port=1), "duplicate check name 'app'"),
])
def test_bad_specification_fails_before_any_probe(run_module, bad_check, message):
    with ScriptedServer() as server:
        result = run_module(dict(checks=[dict(name="app", url=server.url()), bad_check])).result
        requests = server.count
    assert result["failed"] is True
    assert result["msg"].startswith(message)
    assert "\n" not in result["msg"]
    assert requests == 0, "the valid check was probed before the specification was refused"


def test_impossible_poll_settings_fail_before_any_probe(run_module):
    with ScriptedServer() as server:
        result = run_module(dict(checks=[dict(name="app", url=server.url())],
                                 retries=0, consecutive_successes=3)).result
        assert server.count == 0
    assert result["failed"] is True
    assert result["msg"] == "consecutive_successes=3 can never be reached with retries=0 (at most 1 round)"


def test_validate_only_probes_nothing(run_module):
    with ScriptedServer() as server, silent_listener() as port:
        result = run_module(dict(checks=[dict(name="app", url=server.url()), dict(name="sock", port=port)],
                                 validate_only=True)).result
        assert server.count == 0
    assert not result.get("failed")
    assert result["healthy"] is None and result["rounds"] == 0 and result["changed"] is False
    assert [(c["name"], c["type"], c["ok"]) for c in result["checks"]] == [("app", "http", None), ("sock", "tcp", None)]
    assert result["msg"] == "valid: 2 checks: app (http), sock (tcp); nothing probed"


@needs_psycopg2
@needs_docker_sdk
def test_validate_only_with_postgres_and_container_checks(run_module):
    result = run_module(dict(checks=[dict(name="db", type="postgres", port=closed_port(), password="x"),
                                     dict(name="stack", type="container", project_name="nothing-here")],
                             validate_only=True)).result
    assert not result.get("failed")
    assert result["msg"] == "valid: 2 checks: db (postgres), stack (container); nothing probed"


def test_deadline_with_a_quickly_failing_check(run_module):
    run = run_module(dict(checks=[dict(name="sock", port=closed_port())],
                          retries=1000, interval_s=0.2, deadline_s=1.5))
    result = run.result
    assert result["healthy"] is False
    assert result["msg"].endswith("deadline 1.5 s reached)")
    # The last round starts at the deadline, never later; a refused connection takes milliseconds.
    assert 1.5 <= result["elapsed_s"] < 1.9
    assert run.took < 2.5
    assert 7 <= result["rounds"] <= 9  # rounds at 0, 0.2, ... 1.4 and one at the deadline


def test_deadline_with_a_hanging_check(run_module):
    with silent_listener() as port:
        run = run_module(dict(
            checks=[dict(name="hung", url="http://127.0.0.1:%d/health" % port, timeout_s=1.0)],
            retries=1000, interval_s=0.1, deadline_s=1.5))
        result = run.result
    assert result["healthy"] is False
    assert result["checks"][0]["error"] == "timed out after 1.0 s"
    # The round running at the deadline is finished: 1.5 s + one timeout (+ watchdog grace).
    assert run.took < 1.5 + 1.0 + _health.WATCHDOG_GRACE_S + 0.5
    assert result["rounds"] == 2


def test_latency_limit(run_module):
    with ScriptedServer(lambda n, handler: (200, b"ok", 0.3)) as server:
        result = run_module(dict(checks=[dict(name="slow", url=server.url(), max_latency_ms=100)],
                                 fail_on_unhealthy=False)).result
    check = result["checks"][0]
    assert check["ok"] is False and check["status"] == 200 and check["latency_ms"] >= 300
    assert check["error"] == "latency %.0f ms > 100 ms" % check["latency_ms"]


def test_round_time_is_the_slowest_check_not_the_sum(run_module):
    with ScriptedServer(lambda n, handler: (200, b"ok", 0.3)) as server:
        result = run_module(dict(checks=[dict(name="c%d" % i, url=server.url("/c%d" % i))
                                         for i in range(3)])).result
    assert result["healthy"] is True
    assert 0.3 <= result["elapsed_s"] < 0.6


def test_watch_unhealthy_on_consecutive_failures(run_module):
    with ScriptedServer(lambda n, handler: (200 if n <= 3 else 503, b"", 0)) as server:
        run = run_module(dict(checks=[dict(name="app", url=server.url())],
                              watch_s=20, interval_s=0.05, consecutive_failures=2))
        result = run.result
    assert result["healthy"] is False and result["failed"] is True
    assert result["rounds"] == 5 and run.took < 5
    assert result["history"] == [[], [], [], ["app"], ["app"]]
    assert result["msg"].startswith("unhealthy: app: HTTP 503 (expected 200) (5 rounds in ")
    assert result["msg"].endswith(", 2 failed rounds in a row)")


def test_watch_healthy_when_the_window_closes(run_module):
    with ScriptedServer(lambda n, handler: (503 if n == 2 else 200, b"", 0)) as server:
        run = run_module(dict(checks=[dict(name="app", url=server.url())],
                              watch_s=0.6, interval_s=0.1, consecutive_failures=2))
        result = run.result
    assert result["healthy"] is True and not result.get("failed")
    assert 0.6 <= result["elapsed_s"] < 1.0 and run.took < 1.5
    assert result["history"][1] == ["app"] and 4 <= result["rounds"] <= 8
    assert result["msg"].startswith("healthy: watched 0.6 s without 2 failed rounds in a row (")


def test_check_mode_probes_for_real(run_module):
    with ScriptedServer() as server:
        result = run_module(dict(checks=[dict(name="app", url=server.url())], _ansible_check_mode=True)).result
        assert server.count == 1
    assert result["healthy"] is True and result["changed"] is False


@needs_psycopg2
def test_password_never_in_output(run_module, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "env-secret-7Qx2")
    run = run_module(dict(
        checks=[dict(name="db-arg", type="postgres", port=closed_port(), password="arg-secret-9Kd4"),
                dict(name="db-env", type="postgres", port=closed_port())],
        fail_on_unhealthy=False))
    result = run.result
    assert "arg-secret-9Kd4" not in run.out and "env-secret-7Qx2" not in run.out
    assert result["invocation"]["module_args"]["checks"][0]["password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert [c["error"] for c in result["checks"]] == ["connection refused"] * 2


def test_missing_psycopg2_only_matters_with_a_postgres_check(run_module, monkeypatch):
    monkeypatch.setattr(_health, "HAS_PSYCOPG2", False)
    result = run_module(dict(checks=[dict(name="db", type="postgres")])).result
    assert result["failed"] is True and "psycopg2" in result["msg"]
    result = run_module(dict(checks=[dict(name="sock", port=closed_port())], fail_on_unhealthy=False)).result
    assert not result.get("failed")


@needs_docker_sdk
def test_container_check_with_missing_project_dir(run_module, tmp_path):
    missing = str(tmp_path / "absent")
    result = run_module(dict(checks=[dict(name="stack", type="container", project_dir=missing)],
                             validate_only=True)).result
    assert result["failed"] is True
    assert result["msg"] == "check 'stack': project directory %s does not exist" % missing
