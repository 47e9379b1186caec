# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `prometheus` check of lastgood.rollback.health_check against a real Prometheus server.

A private `prometheus` (127.0.0.1, scrape interval 1 s) scrapes the demo app of a private
demo stack while a load generator sends it about 80 requests a second. Checked through
ansible-playbook: healthy at 0% errors; inconclusive (never healthy) on a query without data,
an invalid query and an unreachable Prometheus, with on_inconclusive deciding whether the task
fails; then 20% errors injected (the app recreated with APP_ERROR_RATE=0.2) are detected
within the query window plus one scrape interval, and the gate's verdict is `failed`.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

try:
    from . import prometheus_support as support
    from . import stacks
    from .test_health_check_engine import finish_health_check, start_health_check
except ImportError:
    import prometheus_support as support
    import stacks
    from test_health_check_engine import finish_health_check, start_health_check

if str(stacks.REPO_ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(stacks.REPO_ROOT / ".collections"))

from ansible_collections.lastgood.rollback.plugins.module_utils import _health  # noqa: E402

pytestmark = pytest.mark.skipif(not support.have_prometheus(),
                                reason="prometheus/promtool missing: run scripts/setup-engine.sh")

WINDOW_S = 10
SCRAPE_S = 1.0


@pytest.fixture(scope="module")
def scraped(module_stack):
    """(stack, prometheus, load generator): the app under load, scraped until data is there."""
    stack = module_stack(extra_env={"APP_ERROR_RATE": "0"})
    with support.PrometheusServer([f"127.0.0.1:{stack.ports['app']}"], scrape_interval_s=SCRAPE_S) as prom:
        with support.LoadGenerator(stack.url("app", "/api")) as load:
            # rate() over the window needs two scrapes of traffic; wait for a number, not a poll.
            prom.wait_for_series(support.error_rate_query(f"{WINDOW_S}s"), timeout=60)
            yield stack, prom, load


def prometheus_check(prom_url, query, threshold, comparison="<", name="prom"):
    return {"name": name, "type": "prometheus", "url": prom_url, "query": query,
            "threshold": threshold, "comparison": comparison, "timeout_s": 2}


def run_gate(tmp_path, checks, **options):
    args = dict(checks=checks, retries=20, interval_s=0.5, deadline_s=10)
    args.update(options)
    return finish_health_check(start_health_check(tmp_path, args))


def test_healthy_at_zero_errors(scraped, tmp_path):
    stack, prom, load = scraped
    run = run_gate(tmp_path, [
        prometheus_check(prom.url, support.error_rate_query(f"{WINDOW_S}s"), 0.05, name="error-rate"),
        prometheus_check(prom.url, support.p95_query(f"{WINDOW_S}s"), 0.5, name="p95"),
    ], consecutive_successes=3)
    assert run.status == "ok", run.output
    result = run.result
    assert result["healthy"] is True and result["verdict"] == "healthy" and result["inconclusive"] is False
    by_name = {check["name"]: check for check in result["checks"]}
    assert by_name["error-rate"]["ok"] is True and by_name["error-rate"]["inconclusive"] is False
    assert by_name["error-rate"]["value"] == 0
    assert by_name["error-rate"]["series"] == 1 and by_name["error-rate"]["status"] == 200
    assert 0 < by_name["p95"]["value"] <= 0.5, by_name["p95"]
    assert "<" in by_name["p95"]["reason"]
    assert load.statuses.get(200, 0) > 100 and not any(s and s >= 500 for s in load.statuses)


def test_query_without_data_is_inconclusive_and_fails_by_default(scraped, tmp_path):
    stack, prom, load = scraped
    query = "sum(rate(demo_no_such_metric_total[10s]))"
    run = run_gate(tmp_path, [prometheus_check(prom.url, query, 1)], deadline_s=1.5, retries=3)
    assert run.status == "fatal", run.output
    result = run.result
    assert result["healthy"] is False and result["verdict"] == "inconclusive" and result["inconclusive"] is True
    check = result["checks"][0]
    assert check["ok"] is False and check["inconclusive"] is True and check["series"] == 0
    assert check["value"] is None
    assert "no data" in check["error"] and check["error"].startswith("inconclusive: ")
    assert result["msg"].startswith("inconclusive: ")
    assert result["consecutive_failures"] == 0 and result["consecutive_inconclusive"] == result["rounds"]


def test_on_inconclusive_report_lets_the_caller_decide(scraped, tmp_path):
    stack, prom, load = scraped
    run = run_gate(tmp_path, [prometheus_check(prom.url, "sum(rate(demo_no_such_metric_total[10s]))", 1)],
                   deadline_s=1, retries=2, on_inconclusive="report", fail_on_unhealthy=True)
    assert run.status == "ok", run.output
    assert run.result["healthy"] is False and run.result["verdict"] == "inconclusive"


def test_invalid_promql_is_inconclusive_with_the_error(scraped, tmp_path):
    stack, prom, load = scraped
    run = run_gate(tmp_path, [prometheus_check(prom.url, "sum(rate(demo_http_requests_total[10s]", 1)],
                   deadline_s=1, retries=1, on_inconclusive="report")
    check = run.result["checks"][0]
    assert run.result["verdict"] == "inconclusive" and run.result["healthy"] is False
    assert check["inconclusive"] is True and check["status"] == 400
    assert "query refused (HTTP 400, bad_data)" in check["error"]
    assert "parse error" in check["error"]


def test_unreachable_prometheus_is_inconclusive_not_healthy(scraped, tmp_path):
    stack, prom, load = scraped
    closed = f"http://127.0.0.1:{stacks.free_port()}"
    run = run_gate(tmp_path, [prometheus_check(closed, "vector(0)", 1)], deadline_s=1, retries=1)
    assert run.status == "fatal"
    check = run.result["checks"][0]
    assert run.result["verdict"] == "inconclusive" and run.result["healthy"] is False
    assert check["error"] == "inconclusive: Prometheus unreachable: connection refused"


def test_failed_http_check_beats_inconclusive(scraped, tmp_path):
    stack, prom, load = scraped
    run = run_gate(tmp_path, [
        prometheus_check(prom.url, "sum(rate(demo_no_such_metric_total[10s]))", 1),
        {"name": "missing-page", "url": stack.url("app", "/nope"), "status": [200]},
    ], deadline_s=1, retries=1, fail_on_unhealthy=False, on_inconclusive="report")
    assert run.result["verdict"] == "failed" and run.result["healthy"] is False


def test_injected_error_rate_detected_within_window_plus_scrape(scraped, tmp_path):
    """Last: recreates the app with 20% errors."""
    stack, prom, load = scraped
    checks = _health.parse_checks([prometheus_check(prom.url, support.error_rate_query(f"{WINDOW_S}s"), 0.05)])
    settings = _health.PollSettings(interval_s=0.25, watch_s=120, consecutive_failures=1)
    watch = {}

    def watcher():
        watch["outcome"] = _health.poll(lambda: _health.run_round(checks), settings)
        watch["ended_at"] = time.monotonic()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    load.reset_errors()
    support.set_error_rate(stack, 0.2)
    thread.join(timeout=WINDOW_S + 60)
    assert not thread.is_alive(), "the watch did not end"
    outcome = watch["outcome"]
    assert outcome.verdict == "failed" and outcome.stop_reason == "failures", _health.summary(outcome, settings)
    assert load.first_error_at is not None
    detected_after = watch["ended_at"] - load.first_error_at
    assert 0 < detected_after <= WINDOW_S + SCRAPE_S, detected_after
    assert outcome.results[0].value > 0.05

    # The module says so too, as a failed verdict (not inconclusive), failing the task.
    run = run_gate(tmp_path, [prometheus_check(prom.url, support.error_rate_query(f"{WINDOW_S}s"), 0.05)],
                   consecutive_failures=1)
    assert run.status == "fatal", run.output
    assert run.result["verdict"] == "failed" and run.result["inconclusive"] is False
    check = run.result["checks"][0]
    assert check["inconclusive"] is False and check["ok"] is False
    assert 0.05 < check["value"] < 0.5 and "not < 0.05" in check["error"]
