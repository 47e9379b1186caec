# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the `prometheus` check of module_utils/_health.py: judging API answers, the
specification checks, the inconclusive rules of the polling loop (fake clock), and the probe
against a local HTTP server on 127.0.0.1 that answers like the Prometheus query API.
(The real Prometheus server is in tests/integration/test_prometheus_gate.py.)"""

from __future__ import annotations

import json
import urllib.parse

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _health
from ansible_collections.lastgood.rollback.plugins.module_utils._health import (
    HealthSpecError,
    PollSettings,
    evaluate_prometheus_answer,
    parse_checks,
)
from ansible_collections.lastgood.rollback.tests.unit.plugins.module_utils.test_health import (
    ScriptedServer,
    closed_port,
    silent_listener,
)


def vector(*values, labels=None):
    result = [{"metric": dict(labels[i]) if labels else {}, "value": [1700000000.0, value]}
              for i, value in enumerate(values)]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def judge(payload, comparison="<", threshold=0.05, status=200):
    return evaluate_prometheus_answer(status, payload, comparison, threshold)


# -- judging answers ----------------------------------------------------------------------------

def test_value_below_the_bound_passes():
    verdict = judge(vector("0.01"))
    assert "error" not in verdict and not verdict.get("inconclusive")
    assert verdict["value"] == 0.01 and verdict["series"] == 1
    assert verdict["reason"] == "value = 0.01 < 0.05"


def test_value_above_the_bound_fails():
    verdict = judge(vector("0.2"))
    assert verdict["error"] == "value = 0.2, not < 0.05" and verdict["value"] == 0.2


@pytest.mark.parametrize("comparison, value, ok", [
    ("<", "0.05", False), ("<=", "0.05", True), (">", "0.05", False), (">=", "0.05", True),
    ("==", "0.05", True), ("!=", "0.05", False), (">", "1", True), ("<", "-1", True),
])
def test_comparisons(comparison, value, ok):
    assert ("error" not in judge(vector(value), comparison)) is ok


def test_worst_series_wins_and_is_reported():
    labels = [{"instance": "a"}, {"instance": "b"}, {"instance": "c"}]
    verdict = judge(vector("0.01", "0.3", "0.2", labels=labels))
    assert verdict["value"] == 0.3 and verdict["labels"] == {"instance": "b"} and verdict["series"] == 3
    assert verdict["error"] == 'worst of 3 series {instance="b"} = 0.3, not < 0.05'
    # A lower bound: the smallest value is the worst.
    verdict = judge(vector("5", "1", "3", labels=labels), ">=", 2)
    assert verdict["value"] == 1 and verdict["labels"] == {"instance": "b"}
    # All passing: the one closest to the bound is reported.
    verdict = judge(vector("0.01", "0.04", labels=labels[:2]))
    assert "error" not in verdict and verdict["value"] == 0.04


def test_a_failing_series_beats_a_nan_one_which_beats_a_passing_one():
    labels = [{"i": "a"}, {"i": "b"}]
    assert judge(vector("NaN", "0.9", labels=labels))["error"].endswith("= 0.9, not < 0.05")
    verdict = judge(vector("0.01", "NaN", labels=labels))
    assert verdict["inconclusive"] and verdict["reason"] == 'no data: worst of 2 series {i="b"} is NaN'


def test_scalar_answers_are_judged():
    payload = json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}).encode()
    assert judge(payload, ">", 1)["value"] == 3


@pytest.mark.parametrize("payload, reason", [
    (vector(), "no data: the query returned no series"),
    (vector("NaN"), "no data: value is NaN"),
    (json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode(),
     "query returned a matrix, not an instant vector or a scalar"),
    (b"<html>login</html>", "HTTP 200: not an answer of the Prometheus query API"),
    (json.dumps({"status": "error", "errorType": "bad_data", "error": "1:5: parse error:\nunexpected end"}).encode(),
     "query refused (HTTP 200, bad_data): 1:5: parse error: unexpected end"),
])
def test_answers_that_prove_nothing_are_inconclusive(payload, reason):
    verdict = judge(payload)
    assert verdict["inconclusive"] is True and verdict["reason"] == reason
    assert "value" not in verdict or verdict["value"] is None


def test_infinity_fails_an_upper_bound_and_is_reported_in_the_reason():
    verdict = judge(vector("+Inf"))
    assert verdict["value"] is None and verdict["error"] == "value = inf, not < 0.05"


# -- specifications -------------------------------------------------------------------------------

def spec(**options):
    base = {key: None for key in _health.CHECK_ARGUMENT_SPEC}
    base.update(name="prom", timeout_s=2.0, url="http://127.0.0.1:9090", query="vector(0)", threshold=1)
    base.update(options)
    return base


def test_type_is_inferred_from_query_and_defaults_apply():
    check = parse_checks([spec()])[0]
    assert check.type == "prometheus" and check.comparison == "<="
    assert check.url == "http://127.0.0.1:9090/api/v1/query"
    assert parse_checks([spec(url="http://p:9090/prometheus/")])[0].url == "http://p:9090/prometheus/api/v1/query"
    assert parse_checks([spec(url="http://p:9090/api/v1/query")])[0].url == "http://p:9090/api/v1/query"


@pytest.mark.parametrize("options, message", [
    (dict(url="ftp://x"), "check 'prom': malformed url: url scheme must be http or https"),
    (dict(url="http://x:9090/?a=1"), "check 'prom': url must be the Prometheus base URL, without ?query or #fragment"),
    (dict(query="  "), "check 'prom': query must not be empty"),
    (dict(threshold=float("nan")), "check 'prom': threshold must be a finite number"),
    (dict(threshold=None), "check 'prom': threshold is required for type prometheus"),
    (dict(comparison="=<"), "check 'prom': comparison must be one of <, <=, >, >=, ==, !="),
    (dict(port=9090), "check 'prom': port not valid for type prometheus"),
    (dict(headers={"Bad Header": "x"}), "check 'prom': invalid header 'Bad Header'"),
])
def test_bad_specifications_are_refused(options, message):
    with pytest.raises(HealthSpecError) as raised:
        parse_checks([spec(**options)])
    assert str(raised.value) == message


def test_query_is_refused_on_other_types():
    with pytest.raises(HealthSpecError, match="query, threshold not valid for type http"):
        parse_checks([spec(type="http")])


# -- the polling rules with inconclusive rounds, on a fake clock ------------------------------------

class Script:
    """Replays rounds: "ok", "fail" or "unknown" (inconclusive) for one check."""

    def __init__(self, script):
        self.now = 0.0
        self.script = list(script)
        self.check = parse_checks([spec()])[0]

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def run_round(self):
        kind = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.now += 0.1
        if kind == "unknown":
            return [_health.CheckResult(self.check, ok=False, inconclusive=True, error="inconclusive: no data")]
        return [_health.CheckResult(self.check, ok=kind == "ok", error=None if kind == "ok" else "value = 1, not <= 0")]

    def poll(self, **settings):
        settings.setdefault("interval_s", 1.0)
        return _health.poll(self.run_round, PollSettings(**settings), clock=self.clock, sleep=self.sleep)


def test_inconclusive_rounds_never_make_a_wait_healthy():
    outcome = Script(["unknown"]).poll(retries=5)
    assert not outcome.healthy and outcome.verdict == "inconclusive" and outcome.stop_reason == "retries"
    assert outcome.consecutive_inconclusive == 6 and outcome.consecutive_failures == 0
    assert outcome.first_ok_after_s is None


def test_inconclusive_rounds_break_a_success_streak():
    outcome = Script(["ok", "ok", "unknown", "ok", "ok", "ok"]).poll(retries=10, consecutive_successes=3)
    assert outcome.healthy and outcome.rounds == 6 and outcome.verdict == "healthy"


def test_inconclusive_rounds_neither_count_nor_break_a_failure_streak():
    outcome = Script(["fail", "unknown", "fail", "ok"]).poll(retries=10, consecutive_failures=2)
    assert outcome.verdict == "failed" and outcome.stop_reason == "failures" and outcome.rounds == 3
    outcome = Script(["fail", "unknown", "unknown", "unknown"]).poll(retries=10, consecutive_failures=2, deadline_s=3)
    assert outcome.verdict == "inconclusive" and outcome.consecutive_failures == 1


def test_the_latest_problem_decides_failed_or_inconclusive():
    assert Script(["unknown", "fail"]).poll(retries=3).verdict == "failed"
    assert Script(["fail", "fail", "unknown"]).poll(retries=3).verdict == "inconclusive"
    # Healthy rounds that are too few after an inconclusive stretch are still not a verdict.
    assert Script(["unknown", "unknown", "ok"]).poll(retries=2, consecutive_successes=3).verdict == "inconclusive"


def test_a_watch_ending_on_an_inconclusive_round_is_inconclusive():
    outcome = Script(["ok", "ok", "unknown"]).poll(watch_s=3)
    assert not outcome.healthy and outcome.verdict == "inconclusive" and outcome.stop_reason == "window"
    settings = PollSettings(watch_s=3, interval_s=1.0)
    assert _health.summary(outcome, settings).startswith("inconclusive: prom: inconclusive: no data (")
    assert "watch window 3.0 s ended on an inconclusive round" in _health.summary(outcome, settings)
    # Prometheus back before the window closes: the watch is healthy.
    assert Script(["unknown", "unknown", "ok"]).poll(watch_s=3).verdict == "healthy"
    # A failure in a watch still ends it at once.
    assert Script(["unknown", "fail"]).poll(watch_s=30).stop_reason == "failures"


def test_result_dict_tells_the_verdicts_apart():
    outcome = Script(["unknown"]).poll(retries=0)
    result = _health.result_dict(outcome, PollSettings())
    assert (result["healthy"], result["verdict"], result["inconclusive"]) == (False, "inconclusive", True)
    assert result["history"] == [["prom"]]
    assert result["checks"][0]["inconclusive"] is True
    outcome = Script(["fail"]).poll(retries=0)
    result = _health.result_dict(outcome, PollSettings())
    assert (result["healthy"], result["verdict"], result["inconclusive"]) == (False, "failed", False)
    assert result["msg"].startswith("unhealthy: ")


# -- the probe against a local server ------------------------------------------------------------------

def test_probe_posts_the_query_and_judges_the_answer():
    with ScriptedServer(lambda n, handler: (200, vector("0.2"), 0)) as server:
        check = parse_checks([spec(url=server.url("/"), query='sum(rate(x{a="b"}[30s]))', threshold=0.05,
                                   comparison="<", headers={"Authorization": "Bearer t"}, timeout_s=1.5)])[0]
        result = check.probe()
        method, path, headers = server.requests[0]
    assert method == "POST" and path == "/api/v1/query" and headers["Authorization"] == "Bearer t"
    assert result.ok is False and result.failed and result.value == 0.2 and result.status == 200
    assert result.as_dict()["reason"] == "value = 0.2, not < 0.05"


def test_probe_sends_the_query_and_timeout_as_form_fields():
    bodies = []

    def respond(n, handler):
        bodies.append(handler.rfile.read(int(handler.headers["Content-Length"])).decode())
        return 200, vector("0"), 0

    with ScriptedServer(respond) as server:
        parse_checks([spec(url=server.url("/"), query='up{job="a b"}', timeout_s=1.5)])[0].probe()
    assert urllib.parse.parse_qs(bodies[0]) == {"query": ['up{job="a b"}'], "timeout": ["1.5"]}


def test_api_error_answers_are_inconclusive():
    error = json.dumps({"status": "error", "errorType": "timeout", "error": "query timed out"}).encode()
    with ScriptedServer(lambda n, handler: (503, error, 0)) as server:
        result = parse_checks([spec(url=server.url("/"))])[0].probe()
    assert result.inconclusive and not result.ok and not result.failed and result.status == 503
    assert result.error == "inconclusive: query refused (HTTP 503, timeout): query timed out"


def test_unreachable_and_silent_servers_are_inconclusive():
    result = parse_checks([spec(url="http://127.0.0.1:%d" % closed_port())])[0].probe()
    assert result.inconclusive and result.error == "inconclusive: Prometheus unreachable: connection refused"
    with silent_listener() as port:
        check = parse_checks([spec(url="http://127.0.0.1:%d" % port, timeout_s=0.3)])[0]
        result = _health.run_round([check])[0]
    assert result.inconclusive and not result.ok
    assert result.error in ("inconclusive: Prometheus unreachable: timed out after 0.3 s",
                            "inconclusive: Prometheus did not answer within 0.3 s")


def test_validation_result_describes_prometheus_checks():
    result = _health.validation_result(parse_checks([spec()]))
    assert result["verdict"] is None and result["inconclusive"] is None
    assert result["checks"][0]["inconclusive"] is None and result["checks"][0]["value"] is None
