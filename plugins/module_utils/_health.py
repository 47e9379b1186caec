# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks (HTTP, TCP, compose containers, PostgreSQL, Prometheus queries) and the polling loop.

The probes talk to the network; everything around them (parsing and validating the check
specifications, running one round in parallel with a hard time bound, the polling rules,
the messages) is plain Python: `poll()` takes its clock and sleep function as arguments so
its timing rules can be tested without waiting.

A check ends a probe ok, failed or inconclusive. Only a Prometheus check can be inconclusive:
its query said nothing (no data, NaN, Prometheus unreachable, the query refused). An
inconclusive round is never counted as healthy, nor as failed; a gate whose last word was
inconclusive ends with the verdict `inconclusive`, never `healthy`.
"""

from __future__ import annotations

import collections
import http.client
import json
import math
import os
import re
import socket
import ssl
import threading
import time
import traceback
from urllib import error as urllib_error
from urllib import request as urllib_request
from urllib.parse import urlencode, urlsplit

from ansible_collections.lastgood.rollback.plugins.module_utils import _docker
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import PROJECT_ARGUMENT_SPEC
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import one_line

try:
    import psycopg2
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only without psycopg2
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()


CHECK_TYPES = ("http", "tcp", "container", "postgres", "prometheus")
COMPARISONS = {
    "<": lambda value, threshold: value < threshold,
    "<=": lambda value, threshold: value <= threshold,
    ">": lambda value, threshold: value > threshold,
    ">=": lambda value, threshold: value >= threshold,
    "==": lambda value, threshold: value == threshold,
    "!=": lambda value, threshold: value != threshold,
}
VERDICTS = ("healthy", "failed", "inconclusive")
ON_INCONCLUSIVE = ("fail", "report")
# What a container check requires of each container (see evaluate_containers()).
CONTAINER_REQUIREMENTS = ("ready", "not_crashed")

# Argument spec of one entry of `checks`. Options that belong to one check type carry no
# default here: the type's defaults are applied by parse_checks(), so an option given for the
# wrong type (a typo, a `port` on an http check) can be told apart from a default and refused.
CHECK_ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    type=dict(type="str", choices=list(CHECK_TYPES)),
    timeout_s=dict(type="float", default=2.0),
    # http and prometheus
    url=dict(type="str"),
    status=dict(type="list", elements="int"),
    body_regex=dict(type="str"),
    max_latency_ms=dict(type="float"),
    method=dict(type="str"),
    validate_certs=dict(type="bool"),
    headers=dict(type="dict", no_log=True),  # an Authorization header is a secret
    # tcp and postgres
    host=dict(type="str"),
    port=dict(type="int"),
    # container: the project options of the lead's compose modules, none of them required here
    project_dir=dict(PROJECT_ARGUMENT_SPEC["project_dir"], required=False),
    files=dict(PROJECT_ARGUMENT_SPEC["files"]),
    project_name=dict(PROJECT_ARGUMENT_SPEC["project_name"]),
    services=dict(type="list", elements="str"),
    require=dict(type="str", choices=list(CONTAINER_REQUIREMENTS)),
    # postgres
    user=dict(type="str"),
    password=dict(type="str", no_log=True),
    database=dict(type="str"),
    # prometheus
    query=dict(type="str"),
    threshold=dict(type="float"),
    comparison=dict(type="str", choices=list(COMPARISONS)),
)

POLL_ARGUMENT_SPEC = dict(
    retries=dict(type="int", default=0),
    interval_s=dict(type="float", default=1.0),
    deadline_s=dict(type="float", default=60.0),
    consecutive_successes=dict(type="int", default=1),
    consecutive_failures=dict(type="int"),
    watch_s=dict(type="float"),
    startup_s=dict(type="float", default=0.0),
)


def module_argument_spec():
    """The health_check module's full argument spec (also used by its action plugin)."""
    spec = dict(
        checks=dict(type="list", elements="dict", required=True, options=CHECK_ARGUMENT_SPEC),
        fail_on_unhealthy=dict(type="bool", default=True),
        validate_only=dict(type="bool", default=False),
        on_inconclusive=dict(type="str", default="fail", choices=list(ON_INCONCLUSIVE)),
    )
    spec.update(POLL_ARGUMENT_SPEC)
    return spec


_REQUIRED = object()

# Per type: the options it accepts and their defaults (_REQUIRED: must be given).
TYPE_OPTIONS = {
    "http": dict(url=_REQUIRED, status=[200], body_regex=None, max_latency_ms=None,
                 method="GET", validate_certs=True, headers=None),
    "tcp": dict(host="127.0.0.1", port=_REQUIRED),
    "container": dict(project_dir=None, files=None, project_name=None, services=None, require="ready"),
    "postgres": dict(host="127.0.0.1", port=5432, user="postgres", password=None,
                     database="postgres", query=None),
    "prometheus": dict(url=_REQUIRED, query=_REQUIRED, threshold=_REQUIRED, comparison="<=",
                       validate_certs=True, headers=None),
}
COMMON_OPTIONS = ("name", "type", "timeout_s")

HISTORY_CAP = 50
# A probe gets this much time beyond its own timeout before the round stops waiting for it
# (the libraries' own timeouts are per socket operation, not per answer).
WATCHDOG_GRACE_S = 0.5
# While a failed round waited only for containers whose Docker healthcheck is still `starting`,
# the pause before the next round looks at them this often and ends once none is: the gate sees
# a container turn healthy within this step, not up to interval_s later.
SETTLE_STEP_S = 0.05
MAX_BODY_BYTES = 1024 * 1024
MAX_ERROR_CHARS = 300
PROMETHEUS_QUERY_PATH = "/api/v1/query"


class HealthSpecError(Exception):
    """A check or polling specification is invalid; the message is one line."""


# -- results ------------------------------------------------------------------------------

# What a probe of a service that does not listen yet gets, directly or through a published port.
NOT_UP_ERRORS = ("connection refused", "connection closed without an answer", "connection reset by peer")


class CheckResult:
    """The outcome of one probe."""

    def __init__(self, check, ok, latency_ms=None, error=None, status=None, containers=None,
                 inconclusive=False, value=None, labels=None, series=None, reason=None):
        self.name = check.name
        self.type = check.type
        # An inconclusive probe is never ok: it proved nothing either way.
        self.ok = False if inconclusive else ok
        self.inconclusive = bool(inconclusive)
        self.latency_ms = latency_ms
        self.error = _clip(error) if error else None
        self.status = status
        self.containers = containers
        self.value = value
        self.labels = labels
        self.series = series
        self.reason = _clip(reason) if reason else self.error
        # Container checks: failed only because healthchecks are still `starting` (see pause()).
        self.settling = False
        # Container checks: failed only by containers their restart policy brings back (ready: and
        # healthchecks still `starting`).
        self.restarting = False

    @property
    def not_up(self):
        """Failed because the service does not answer yet (nothing listens, its healthcheck is
        still starting, its restart policy is bringing a crashed process back: it may crash only
        until what it needs is up), not because it answered wrong. Behind a published port, docker's proxy
        accepts the connection and closes it (or resets it) without an answer instead."""
        return bool(self.failed) and (self.settling or self.restarting or self.error in NOT_UP_ERRORS)

    @property
    def failed(self):
        """Failed for certain: not ok and not merely inconclusive (None before any probe)."""
        if self.ok is None:
            return None
        return not self.ok and not self.inconclusive

    def as_dict(self):
        result = dict(
            name=self.name,
            type=self.type,
            ok=self.ok,
            latency_ms=None if self.latency_ms is None else round(self.latency_ms, 1),
            error=self.error,
            status=self.status,
        )
        if self.type == "container":
            result["containers"] = self.containers or []
        if self.type == "prometheus":
            result.update(
                inconclusive=None if self.ok is None else self.inconclusive,
                value=self.value,
                labels=self.labels,
                series=self.series,
                reason=self.reason,
            )
        return result


def _clip(text):
    text = one_line(text)
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS - 3] + "..."
    return text


def _seconds(value):
    return "%.1f s" % value


def describe_os_error(exc, timeout_s, host=None):
    """A short, one-line description of a network error."""
    if isinstance(exc, urllib_error.URLError) and not isinstance(exc, urllib_error.HTTPError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return describe_os_error(reason, timeout_s, host)
        text = str(reason)
        if "timed out" in text:
            return "timed out after %s" % _seconds(timeout_s)
        return one_line(text)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out after %s" % _seconds(timeout_s)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):  # before its base ConnectionResetError
        return "connection closed without an answer"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve host %r" % host if host else "cannot resolve host"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate verify failed: %s" % (exc.verify_message or one_line(exc))
    if isinstance(exc, ssl.SSLError):
        return "TLS error: %s" % (exc.reason or one_line(exc))
    if isinstance(exc, http.client.HTTPException):
        return "invalid HTTP answer: %s: %s" % (type(exc).__name__, one_line(exc))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return "%s: %s" % (type(exc).__name__, one_line(exc))


# -- checks ---------------------------------------------------------------------------------

class Check:
    """One validated check specification. Subclasses implement probe()."""

    type = None

    def __init__(self, options):
        self.name = options["name"]
        self.timeout_s = options["timeout_s"]

    def probe(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def timed_out(self, elapsed_s):
        return CheckResult(self, ok=False, latency_ms=elapsed_s * 1000.0,
                           error="timed out after %s" % _seconds(self.timeout_s))

    def describe(self):
        return CheckResult(self, ok=None)


class _NoRedirect(urllib_request.HTTPRedirectHandler):
    """A health endpoint that redirects (say, to a login page) is reported as it answered."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def build_opener(validate_certs):
    """A urllib opener that follows no redirect and ignores proxy settings."""
    if validate_certs:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # An empty ProxyHandler: http_proxy/https_proxy from the environment are ignored, a
    # health check must reach the host itself.
    return urllib_request.build_opener(
        urllib_request.ProxyHandler({}),
        urllib_request.HTTPSHandler(context=context),
        _NoRedirect(),
    )


class HttpCheck(Check):
    type = "http"

    def __init__(self, options):
        super().__init__(options)
        self.url = options["url"]
        self.status = list(options["status"])
        self.body_regex = options["body_regex"]
        self.pattern = re.compile(self.body_regex) if self.body_regex is not None else None
        self.max_latency_ms = options["max_latency_ms"]
        self.method = options["method"]
        self.headers = dict(options["headers"] or {})
        self.host = urlsplit(self.url).hostname
        self.opener = build_opener(options["validate_certs"])

    def expected_status(self):
        return ", ".join(str(code) for code in self.status)

    def probe(self):
        request = urllib_request.Request(self.url, method=self.method, headers=self.headers)
        request.add_header("User-Agent", "lastgood.rollback.health_check")
        started = time.monotonic()
        body = None
        try:
            try:
                response = self.opener.open(request, timeout=self.timeout_s)
            except urllib_error.HTTPError as answer:  # non-2xx: still an answer with a status
                response = answer
            try:
                status = response.getcode()
                if self.pattern is not None:
                    body = response.read(MAX_BODY_BYTES)
            finally:
                response.close()
        except Exception as exc:  # every network failure becomes the check's error
            return CheckResult(self, ok=False, latency_ms=(time.monotonic() - started) * 1000.0,
                               error=describe_os_error(exc, self.timeout_s, self.host))
        # Rounded as reported, so the message and the returned latency always agree.
        latency_ms = round((time.monotonic() - started) * 1000.0, 1)
        error = None
        if status not in self.status:
            error = "HTTP %s (expected %s)" % (status, self.expected_status())
        elif self.pattern is not None and not self.pattern.search(body.decode("utf-8", "replace")):
            error = "body does not match %r" % self.body_regex
        elif self.max_latency_ms is not None and latency_ms > self.max_latency_ms:
            error = "latency %.0f ms > %g ms" % (latency_ms, self.max_latency_ms)
        return CheckResult(self, ok=error is None, latency_ms=latency_ms, error=error, status=status)


class TcpCheck(Check):
    type = "tcp"

    def __init__(self, options):
        super().__init__(options)
        self.host = options["host"]
        self.port = options["port"]

    def probe(self):
        started = time.monotonic()
        try:
            connection = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except Exception as exc:
            return CheckResult(self, ok=False, latency_ms=(time.monotonic() - started) * 1000.0,
                               error=describe_os_error(exc, self.timeout_s, self.host))
        latency_ms = (time.monotonic() - started) * 1000.0
        connection.close()
        return CheckResult(self, ok=True, latency_ms=latency_ms)


class ContainerCheck(Check):
    """All containers of the chosen services of a compose project run (and are healthy)."""

    type = "container"

    def __init__(self, options):
        super().__init__(options)
        self.project_dir = options["project_dir"]
        self.files = options["files"]
        self.project_name = options["project_name"]
        self.services = options["services"]
        self.require = options["require"]
        # The compose project name, resolved once before probing (see the module).
        self.project = self.project_name
        self._client = None

    def _docker_client(self):
        if self._client is None:
            self._client = _docker.docker.from_env(timeout=max(1, int(math.ceil(self.timeout_s))))
        return self._client

    def probe(self):
        started = time.monotonic()
        try:
            by_service = _docker.project_containers(self._docker_client(), self.project)
        except Exception as exc:
            self._client = None  # a fresh connection next round
            return CheckResult(self, ok=False, latency_ms=(time.monotonic() - started) * 1000.0,
                               error="Docker engine: %s" % one_line(exc))
        latency_ms = (time.monotonic() - started) * 1000.0
        error, containers = evaluate_containers(self.project, by_service, self.services, self.require)
        result = CheckResult(self, ok=error is None, latency_ms=latency_ms, error=error, containers=containers)
        if error is not None and self.require == "ready":
            result.settling = only_starting(by_service, self.services)
            # Not ready because a restart policy brings a crash back: a start, as with not_crashed.
            result.restarting = not result.settling and only_starting(by_service, self.services, restarting=True)
        elif error is not None:
            # A crash that nothing brings back counts at once, also within a watch's startup allowance;
            # one its restart policy brings back is a start until the allowance has passed.
            result.restarting = only_restarting(by_service, self.services)
        return result

    def still_starting(self):
        """Whether the containers are still only waiting for a `starting` healthcheck. False when
        the engine cannot tell: the next round says what is wrong."""
        try:
            return only_starting(_docker.project_containers(self._docker_client(), self.project), self.services)
        except Exception:  # noqa: BLE001 - any engine error: let the round report it
            self._client = None
            return False


def evaluate_containers(project, by_service, services=None, require="ready"):
    """(error or None, container summaries) for the services of a project.

    `by_service` is what _docker.project_containers() returns. With `require` "ready" a
    container is fine when it runs and, if it has a Docker healthcheck, is `healthy`
    (_docker.container_problem); with "not_crashed", unless it crashed (_docker.crash_problem).
    """
    problem_of = _docker.container_problem if require == "ready" else _docker.crash_problem
    wanted = list(services) if services else sorted(by_service)
    problems = []
    containers = []
    if not wanted and require == "ready":
        return "project %r has no containers" % project, containers
    for service in wanted:
        found = by_service.get(service) or []
        if not found and require == "ready":
            # not_crashed: a service without containers (scaled to 0, a builder) crashed nothing.
            problems.append("service %s has no containers" % service)
        for container in found:
            containers.append(dict(service=service, name=container["name"],
                                   state=container["state"], health=container["health"]))
            problem = problem_of(container)
            if problem:
                problems.append("%s is %s" % (container["name"], problem))
    return ("; ".join(problems) if problems else None), containers


def only_restarting(by_service, services=None):
    """True when every crashed container among the services' is `restarting`: its restart policy
    brings it back."""
    wanted = list(services) if services else sorted(by_service)
    crashed = [c for service in wanted for c in by_service.get(service) or [] if _docker.crash_problem(c)]
    return bool(crashed) and all(c["state"] == "restarting" for c in crashed)


def only_starting(by_service, services=None, restarting=False):
    """True when every wanted service has containers and the only ones not ready are those
    whose Docker healthcheck is still `starting` (none unhealthy, none stopped); with
    `restarting`, also those their restart policy is bringing back after a crash."""
    wanted = list(services) if services else sorted(by_service)
    if not wanted or any(not by_service.get(service) for service in wanted):
        return False
    found = [container for service in wanted for container in by_service[service]]
    waiting = [_docker.still_starting(c) or (restarting and c["state"] == "restarting") for c in found]
    if any(not wait and _docker.container_problem(c) for c, wait in zip(found, waiting)):
        return False
    return any(waiting)


class PostgresCheck(Check):
    type = "postgres"

    def __init__(self, options):
        super().__init__(options)
        self.host = options["host"]
        self.port = options["port"]
        self.user = options["user"]
        self.password = options["password"]
        self.database = options["database"]
        # A data check: the first column of the query's first row must be true (or non-zero).
        self.query = options.get("query")

    def probe(self):
        # libpq counts connect_timeout in whole seconds, at least 2; the round's watchdog
        # holds the check to timeout_s regardless.
        params = dict(
            host=self.host, port=self.port, user=self.user, dbname=self.database,
            connect_timeout=max(2, int(math.ceil(self.timeout_s))),
            application_name="lastgood.rollback.health_check",
            options="-c statement_timeout=%d" % max(1, int(self.timeout_s * 1000)),
        )
        if self.password is not None:
            params["password"] = self.password
        started = time.monotonic()
        try:
            connection = psycopg2.connect(**params)
            try:
                with connection.cursor() as cursor:
                    cursor.execute(self.query or "SELECT 1")
                    row = cursor.fetchone()
            finally:
                connection.close()
        except Exception as exc:
            return CheckResult(self, ok=False, latency_ms=(time.monotonic() - started) * 1000.0,
                               error=describe_postgres_error(exc, self.timeout_s))
        latency_ms = (time.monotonic() - started) * 1000.0
        if self.query:
            if not row or not row[0]:
                return CheckResult(self, ok=False, latency_ms=latency_ms,
                                   error="query returned %s" % ("no row" if not row else repr(row[0])))
            return CheckResult(self, ok=True, latency_ms=latency_ms)
        if not row or row[0] != 1:
            return CheckResult(self, ok=False, latency_ms=latency_ms,
                               error="SELECT 1 returned %r" % (row,))
        return CheckResult(self, ok=True, latency_ms=latency_ms)


def describe_postgres_error(exc, timeout_s):
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timeout expired" in text or "statement timeout" in text:
        return "timed out after %s" % _seconds(timeout_s)
    # libpq: 'connection to server at "h", port p failed: FATAL:  <reason>'
    marker = " failed: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return one_line(text) or type(exc).__name__


class PrometheusCheck(Check):
    """An instant PromQL query whose every series must compare with a threshold.

    Ok when every series satisfies `value <comparison> threshold`, failed when one does not
    (the worst series is reported), inconclusive when the answer proves nothing: no series,
    only NaN, not a number, Prometheus unreachable or answering with an error (a query it
    refuses, a timeout). The time window is part of the query (`rate(x[30s])`).
    """

    type = "prometheus"

    def __init__(self, options):
        super().__init__(options)
        self.url = prometheus_query_url(options["url"])
        self.query = options["query"]
        self.threshold = float(options["threshold"])
        self.comparison = options["comparison"]
        self.headers = dict(options["headers"] or {})
        self.host = urlsplit(self.url).hostname
        self.opener = build_opener(options["validate_certs"])

    def _result(self, latency_ms, inconclusive=False, **kwargs):
        if inconclusive:
            kwargs["error"] = "inconclusive: %s" % kwargs.pop("reason")
        return CheckResult(self, ok=not inconclusive and kwargs.get("error") is None,
                           latency_ms=latency_ms, inconclusive=inconclusive, **kwargs)

    def timed_out(self, elapsed_s):
        return self._result(elapsed_s * 1000.0, inconclusive=True,
                            reason="Prometheus did not answer within %s" % _seconds(self.timeout_s))

    def probe(self):
        # POST with a form body: a long query never meets a URL length limit. Prometheus
        # stops evaluating at its own `timeout`, so a slow query ends as an error answer.
        body = urlencode(dict(query=self.query, timeout="%g" % self.timeout_s)).encode()
        request = urllib_request.Request(self.url, data=body, method="POST", headers=self.headers)
        request.add_header("User-Agent", "lastgood.rollback.health_check")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        started = time.monotonic()
        try:
            try:
                response = self.opener.open(request, timeout=self.timeout_s)
            except urllib_error.HTTPError as answer:  # 400/422/503 carry the API's error
                response = answer
            try:
                status = response.getcode()
                payload = response.read(MAX_BODY_BYTES)
            finally:
                response.close()
        except Exception as exc:
            return self._result((time.monotonic() - started) * 1000.0, inconclusive=True,
                                reason="Prometheus unreachable: %s"
                                % describe_os_error(exc, self.timeout_s, self.host))
        latency_ms = round((time.monotonic() - started) * 1000.0, 1)
        verdict = evaluate_prometheus_answer(status, payload, self.comparison, self.threshold)
        return self._result(latency_ms, status=status, **verdict)


def prometheus_query_url(url):
    """The instant query endpoint under a Prometheus base URL (a full endpoint URL is kept)."""
    base = url.rstrip("/")
    if base.endswith(PROMETHEUS_QUERY_PATH):
        return base
    return base + PROMETHEUS_QUERY_PATH


def _format_value(value):
    return "%g" % value


def _parse_sample_value(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def evaluate_prometheus_answer(status, payload, comparison, threshold):
    """Judge an answer of /api/v1/query; returns the keyword arguments of a CheckResult.

    Keys: inconclusive, reason and, when there is a verdict, value, labels, series and
    (failed) error. Every series is compared; the worst one is reported: a failing series
    beats a NaN one, which beats a passing one; among equals the one furthest from passing.
    """
    try:
        answer = json.loads(payload.decode("utf-8", "replace"))
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
        return dict(inconclusive=True, reason="HTTP %s: not an answer of the Prometheus query API" % status)
    if answer["status"] == "error":
        return dict(inconclusive=True, reason="query refused (HTTP %s, %s): %s" % (
            status, answer.get("errorType") or "error", one_line(answer.get("error") or "no message")))
    data = answer.get("data") if isinstance(answer.get("data"), dict) else {}
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar" and isinstance(result, list) and len(result) == 2:
        samples = [({}, result[1])]
    elif result_type == "vector" and isinstance(result, list):
        samples = [((item.get("metric") or {}), (item.get("value") or [None, None])[1])
                   for item in result if isinstance(item, dict)]
    else:
        return dict(inconclusive=True, reason="query returned a %s, not an instant vector or a scalar"
                    % (result_type or "malformed result"))
    if not samples:
        return dict(inconclusive=True, series=0, reason="no data: the query returned no series")

    passes = COMPARISONS[comparison]
    # A larger value is worse when the threshold is an upper bound, a smaller one otherwise.
    worse_sign = -1.0 if comparison in (">", ">=") else 1.0
    ranked = []
    for labels, text in samples:
        value = _parse_sample_value(text)
        if value is None or math.isnan(value):
            rank = 1  # says nothing
        elif passes(value, threshold):
            rank = 0
        else:
            rank = 2
        badness = 0.0 if value is None or math.isnan(value) else worse_sign * value
        ranked.append((rank, badness, labels, value, text))
    rank, badness, labels, value, text = max(ranked, key=lambda item: (item[0], item[1]))
    series = len(samples)
    where = _series_name(labels, series)
    if rank == 1:
        return dict(inconclusive=True, series=series, labels=labels,
                    reason="no data: %s is %s" % (where, "NaN" if value is not None else repr(text)))
    shown = _format_value(value)
    if math.isinf(value):  # JSON has no infinity: the text stays in reason
        value = None
    if rank == 2:
        text = "%s = %s, not %s %g" % (where, shown, comparison, threshold)
        return dict(series=series, labels=labels, value=value, error=text, reason=text)
    return dict(series=series, labels=labels, value=value,
                reason="%s = %s %s %g" % (where, shown, comparison, threshold))


def _series_name(labels, count):
    if not labels:
        return "value" if count == 1 else "worst of %d series" % count
    text = "{%s}" % ",".join('%s="%s"' % (key, labels[key]) for key in sorted(labels))
    return text if count == 1 else "worst of %d series %s" % (count, text)


CHECK_CLASSES = dict(http=HttpCheck, tcp=TcpCheck, container=ContainerCheck, postgres=PostgresCheck,
                     prometheus=PrometheusCheck)


# -- parsing and validation -------------------------------------------------------------------

def parse_checks(raw_checks, environ=None):
    """Validate the `checks` option and return Check objects; raise HealthSpecError.

    Nothing is probed. `environ` (default os.environ) supplies PGPASSWORD for postgres
    checks without a password.
    """
    environ = os.environ if environ is None else environ
    if not raw_checks:
        raise HealthSpecError("checks must not be empty")
    checks = []
    seen = set()
    for index, raw in enumerate(raw_checks):
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise HealthSpecError("checks[%d]: name must be a non-empty string" % index)
        if name in seen:
            raise HealthSpecError("duplicate check name %r" % name)
        seen.add(name)
        options = _apply_type_defaults(name, raw)
        _VALIDATORS[options["type"]](name, options)
        if options["type"] == "postgres" and options["password"] is None:
            options["password"] = environ.get("PGPASSWORD")
        checks.append(CHECK_CLASSES[options["type"]](options))
    return checks


def _apply_type_defaults(name, raw):
    check_type = raw.get("type")
    if check_type is None:
        if raw.get("query") is not None:
            check_type = "prometheus"
        elif raw.get("url") is not None:
            check_type = "http"
        elif raw.get("port") is not None:
            check_type = "tcp"
        else:
            raise HealthSpecError(
                "check %r: type is required when neither query (prometheus), url (http) nor port (tcp) is given" % name)
    if check_type not in CHECK_CLASSES:
        raise HealthSpecError("check %r: unknown type %r (one of %s)"
                              % (name, check_type, ", ".join(CHECK_TYPES)))
    accepted = TYPE_OPTIONS[check_type]
    foreign = sorted(key for key, value in raw.items()
                     if value is not None and key not in COMMON_OPTIONS and key not in accepted)
    if foreign:
        raise HealthSpecError("check %r: %s not valid for type %s"
                              % (name, ", ".join(foreign), check_type))
    options = dict(name=name, type=check_type, timeout_s=raw.get("timeout_s"))
    if options["timeout_s"] is None:
        options["timeout_s"] = CHECK_ARGUMENT_SPEC["timeout_s"]["default"]
    for key, default in accepted.items():
        value = raw.get(key)
        if value is None:
            if default is _REQUIRED:
                raise HealthSpecError("check %r: %s is required for type %s" % (name, key, check_type))
            value = default
        options[key] = value
    if not options["timeout_s"] > 0:
        raise HealthSpecError("check %r: timeout_s must be greater than 0" % name)
    return options


def validate_url(url):
    """None when `url` is a usable http(s) URL, else the reason it is not."""
    if not isinstance(url, str) or not url:
        return "url is empty"
    if any(char.isspace() for char in url):
        return "url contains whitespace"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        return "url %s" % one_line(exc).lower()
    if parts.scheme not in ("http", "https"):
        return "url scheme must be http or https"
    if not parts.hostname:
        return "url has no host"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "url port must be a number in 1-65535"
    return None


def _validate_http(name, options):
    problem = validate_url(options["url"])
    if problem:
        raise HealthSpecError("check %r: malformed url: %s" % (name, problem))
    if not options["status"]:
        raise HealthSpecError("check %r: status must list at least one HTTP status code" % name)
    for code in options["status"]:
        if not 100 <= code <= 599:
            raise HealthSpecError("check %r: status %d is not an HTTP status code (100-599)" % (name, code))
    if options["body_regex"] is not None:
        try:
            re.compile(options["body_regex"])
        except re.error as exc:
            raise HealthSpecError("check %r: invalid body_regex %r: %s" % (name, options["body_regex"], exc))
    if options["max_latency_ms"] is not None and not options["max_latency_ms"] > 0:
        raise HealthSpecError("check %r: max_latency_ms must be greater than 0" % name)
    method = options["method"].upper()
    if not re.match(r"^[A-Z]+$", method):
        raise HealthSpecError("check %r: invalid method %r" % (name, options["method"]))
    options["method"] = method
    _validate_headers(name, options)


def _validate_headers(name, options):
    headers = {}
    for key, value in (options["headers"] or {}).items():
        value = "" if value is None else str(value)
        if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", str(key)) or "\r" in value or "\n" in value:
            raise HealthSpecError("check %r: invalid header %r" % (name, key))
        headers[str(key)] = value
    options["headers"] = headers


def _validate_prometheus(name, options):
    problem = validate_url(options["url"])
    if problem:
        raise HealthSpecError("check %r: malformed url: %s" % (name, problem))
    parts = urlsplit(options["url"])
    if parts.query or parts.fragment:
        raise HealthSpecError("check %r: url must be the Prometheus base URL, without ?query or #fragment" % name)
    if not options["query"].strip():
        raise HealthSpecError("check %r: query must not be empty" % name)
    threshold = options["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise HealthSpecError("check %r: threshold must be a finite number" % name)
    if options["comparison"] not in COMPARISONS:
        raise HealthSpecError("check %r: comparison must be one of %s" % (name, ", ".join(COMPARISONS)))
    _validate_headers(name, options)


def _validate_port(name, port):
    if not 1 <= port <= 65535:
        raise HealthSpecError("check %r: port %d is not in 1-65535" % (name, port))


def _validate_host(name, host):
    if not host or any(char.isspace() for char in host):
        raise HealthSpecError("check %r: invalid host %r" % (name, host))


def _validate_tcp(name, options):
    _validate_host(name, options["host"])
    _validate_port(name, options["port"])


def _validate_container(name, options):
    if not options["project_dir"] and not options["project_name"]:
        raise HealthSpecError("check %r: a container check needs project_dir or project_name" % name)
    if options["files"] and not options["project_dir"]:
        raise HealthSpecError("check %r: files needs project_dir" % name)
    if options["services"] is not None:
        if not options["services"] or not all(options["services"]):
            raise HealthSpecError("check %r: services must be non-empty names (omit it for all services)" % name)


def _validate_postgres(name, options):
    _validate_host(name, options["host"])
    _validate_port(name, options["port"])
    for key in ("user", "database"):
        if not options[key]:
            raise HealthSpecError("check %r: %s must not be empty" % (name, key))


_VALIDATORS = dict(http=_validate_http, tcp=_validate_tcp, container=_validate_container,
                   postgres=_validate_postgres, prometheus=_validate_prometheus)


class PollSettings:
    """The validated polling options."""

    def __init__(self, retries=0, interval_s=1.0, deadline_s=60.0, consecutive_successes=1,
                 consecutive_failures=None, watch_s=None, startup_s=0.0):
        if retries < 0:
            raise HealthSpecError("retries must be 0 or more")
        if interval_s < 0:
            raise HealthSpecError("interval_s must be 0 or more")
        if deadline_s < 0:
            raise HealthSpecError("deadline_s must be 0 or more")
        if consecutive_successes < 1:
            raise HealthSpecError("consecutive_successes must be 1 or more")
        if consecutive_failures is not None and consecutive_failures < 1:
            raise HealthSpecError("consecutive_failures must be 1 or more")
        if watch_s is not None and not watch_s > 0:
            raise HealthSpecError("watch_s must be greater than 0")
        if startup_s is None or startup_s < 0:
            raise HealthSpecError("startup_s must be 0 or more")
        if watch_s is None and consecutive_successes > retries + 1:
            raise HealthSpecError(
                "consecutive_successes=%d can never be reached with retries=%d (at most %s)"
                % (consecutive_successes, retries, _plural(retries + 1, "round")))
        self.retries = retries
        self.interval_s = interval_s
        self.deadline_s = deadline_s
        self.consecutive_successes = consecutive_successes
        self.watch_s = watch_s
        # Watching, one failed round is enough by default; waiting, failed rounds only end
        # the loop early when asked to.
        if consecutive_failures is None and watch_s is not None:
            consecutive_failures = 1
        self.consecutive_failures = consecutive_failures
        # Watching only: how long a service just (re)started may take to answer at all.
        self.startup_s = startup_s if watch_s is not None else 0.0

    @classmethod
    def from_params(cls, params):
        return cls(**{key: params[key] for key in POLL_ARGUMENT_SPEC})

    @property
    def watching(self):
        return self.watch_s is not None


# -- running ------------------------------------------------------------------------------

def _probe_into(check, box):
    try:
        box["result"] = check.probe()
    except Exception as exc:  # a bug in a probe must not become a traceback
        box["result"] = CheckResult(check, ok=False, error="internal error: %s: %s"
                                    % (type(exc).__name__, one_line(exc)))


def run_round(checks, grace_s=WATCHDOG_GRACE_S, clock=time.monotonic):
    """Probe every check in parallel; the round takes as long as its slowest check.

    A probe still busy `grace_s` after its timeout is reported as timed out and left behind
    (daemon thread), so a round is bounded by the largest timeout_s plus grace_s.
    """
    started = clock()
    boxes = []
    for check in checks:
        box = {}
        thread = threading.Thread(target=_probe_into, args=(check, box),
                                  name="health-check-%s" % check.name)
        thread.daemon = True
        thread.start()
        boxes.append((check, thread, box))
    results = []
    for check, thread, box in boxes:
        thread.join(max(0.0, started + check.timeout_s + grace_s - clock()))
        result = box.get("result")  # read once: a late probe cannot change it afterwards
        if result is None:
            result = check.timed_out(clock() - started)
        results.append(result)
    return results


class PollOutcome:
    def __init__(self):
        self.healthy = False
        self.results = []
        self.rounds = 0
        self.consecutive_successes = 0
        self.consecutive_failures = 0
        self.consecutive_inconclusive = 0
        # The kind of the latest round that was not all ok: "failed", "inconclusive" or None.
        self.last_problem = None
        self.verdict = None
        self.elapsed_s = 0.0
        self.first_ok_after_s = None
        # Unix time the round that began the current failure streak started (None: no streak).
        self.failing_since = None
        self.history = collections.deque(maxlen=HISTORY_CAP)
        self.stop_reason = None
        # Watching with startup_s: the rounds before everything answered, and when it did.
        self.starting_rounds = 0
        self.up_after_s = None


def poll(round_runner, settings, clock=time.monotonic, sleep=time.sleep, pause=None):
    """Run rounds until the settings say stop; return a PollOutcome.

    Waiting (no watch_s): stop healthy after `consecutive_successes` all-ok rounds in a row;
    unhealthy once `retries` rounds after the first are used up, the deadline has passed or
    (if set) `consecutive_failures` failed rounds came in a row.
    Watching with startup_s: a failed round in which every failure is a service not answering
    yet (CheckResult.not_up) counts for nothing, until the first round in which everything
    answered or until startup_s has passed; the window starts again after each such round, so
    it covers watch_s of a service that answers.
    Watching (watch_s): rounds run until watch_s has elapsed; unhealthy as soon as
    `consecutive_failures` failed rounds came in a row, healthy if the window closes first, on a
    round that did not fail: a window that closes on a failed round goes on, interval_s apart,
    until that streak reaches `consecutive_failures` (unhealthy) or a round does not fail.
    Between rounds the loop sleeps interval_s, cut short so that the last round starts at the
    deadline (the end of the window), never after it. Waiting, after a failed round, it calls
    `pause(seconds, results)` instead when given, which may end the pause early (see pause()).
    A round with a failed check is failed. A round without one but with an inconclusive check
    is neither ok nor failed: it ends a success streak, leaves a failure streak as it is, and
    when the latest round that was not all ok was inconclusive, an unhealthy end is given the
    verdict "inconclusive" instead of "failed"; a watch whose last round was inconclusive ends
    inconclusive, never healthy.
    """
    outcome = PollOutcome()
    started = clock()
    end = started + (settings.watch_s if settings.watching else settings.deadline_s)
    starting_until = started + settings.startup_s if settings.startup_s else None
    while True:
        round_started_at = time.time()
        outcome.results = round_runner()
        outcome.rounds += 1
        now = clock()
        outcome.history.append([result.name for result in outcome.results if not result.ok])
        failed = any(not result.ok and not result.inconclusive for result in outcome.results)
        inconclusive = not failed and any(result.inconclusive for result in outcome.results)
        if starting_until is not None and now < starting_until:
            if failed and all(result.not_up for result in outcome.results if result.failed):
                outcome.starting_rounds += 1
                end = now + settings.watch_s
                sleep(min(settings.interval_s, max(0.0, starting_until - now)))
                continue
            # A wrong answer counts at once; the startup goes on while any service does not answer.
            if not any(result.not_up for result in outcome.results):
                starting_until = None
                outcome.up_after_s = round(now - started, 3)
        if failed:
            if outcome.consecutive_failures == 0:
                outcome.failing_since = round_started_at
            outcome.consecutive_failures += 1
            outcome.consecutive_successes = 0
            outcome.consecutive_inconclusive = 0
            outcome.last_problem = "failed"
        elif inconclusive:
            outcome.consecutive_inconclusive += 1
            outcome.consecutive_successes = 0
            outcome.last_problem = "inconclusive"
        else:
            outcome.consecutive_successes += 1
            outcome.consecutive_failures = 0
            outcome.failing_since = None
            outcome.consecutive_inconclusive = 0
            if outcome.first_ok_after_s is None:
                outcome.first_ok_after_s = now - started
        if failed and settings.consecutive_failures and outcome.consecutive_failures >= settings.consecutive_failures:
            outcome.healthy, outcome.stop_reason = False, "failures"
            break
        if not settings.watching:
            if outcome.consecutive_successes >= settings.consecutive_successes:
                outcome.healthy, outcome.stop_reason = True, "successes"
                break
            if outcome.rounds > settings.retries:
                outcome.healthy, outcome.stop_reason = False, "retries"
                break
        # A watch window that closes in the middle of a failure streak is not cut off: the streak
        # is decided by the next rounds (consecutive_failures of them in a row, or an ok round).
        if now >= end and not (settings.watching and failed):
            outcome.healthy = settings.watching and not inconclusive
            outcome.stop_reason = "window" if settings.watching else "deadline"
            break
        wait_s = max(0.0, min(settings.interval_s, end - now)) if now < end else settings.interval_s
        if pause is not None and failed and not settings.watching:
            pause(wait_s, outcome.results)
        else:
            sleep(wait_s)
    outcome.elapsed_s = clock() - started
    if outcome.healthy:
        outcome.verdict = "healthy"
    elif outcome.stop_reason != "failures" and outcome.last_problem == "inconclusive":
        outcome.verdict = "inconclusive"
    else:
        outcome.verdict = "failed"
    return outcome


def pause(checks, seconds, results, clock=time.monotonic, sleep=time.sleep, step_s=SETTLE_STEP_S):
    """The pause after a failed round while waiting: `seconds`, unless every failed check of the
    round was a container check failed only by healthchecks still `starting` (a service just
    recreated); then those are looked at every `step_s` and the pause ends as soon as none is
    starting any more (healthy or not: the next round says which). Only the pause after a failed
    round is shortened, so consecutive_successes rounds stay interval_s apart. Returns whether it
    ended early."""
    failing = [result for result in results if not result.ok]
    by_name = dict((check.name, check) for check in checks)
    starting = [by_name[result.name] for result in failing if result.settling]
    if not starting or len(starting) != len(failing):
        sleep(seconds)
        return False
    until = clock() + seconds
    while until - clock() > step_s:
        sleep(step_s)
        if not any(check.still_starting() for check in starting):
            return True
    sleep(max(0.0, until - clock()))
    return False


# -- reporting ------------------------------------------------------------------------------

def _plural(count, word):
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


def summary(outcome, settings):
    """The one-line `msg`."""
    results = outcome.results
    failing = [result for result in results if not result.ok]
    ok_count = len(results) - len(failing)
    where = "%s in %s" % (_plural(outcome.rounds, "round"), _seconds(outcome.elapsed_s))
    failures = "; ".join("%s: %s" % (result.name, result.error) for result in failing)
    if outcome.healthy:
        text = "healthy: %d/%d checks ok" % (ok_count, len(results))
        if not settings.watching:
            return "%s after %s (%s)" % (text, _plural(outcome.rounds, "round"), _seconds(outcome.elapsed_s))
        if settings.consecutive_failures == 1:
            text = "healthy: watched %s without a failed round" % _seconds(settings.watch_s)
        else:
            text = "healthy: watched %s without %d failed rounds in a row" % (
                _seconds(settings.watch_s), settings.consecutive_failures)
        return "%s (%s)" % (text, where)
    reason = {
        "failures": "%s in a row" % _plural(outcome.consecutive_failures, "failed round"),
        "retries": "retries exhausted",
        "deadline": "deadline %s reached" % _seconds(settings.deadline_s),
        "window": "watch window %s ended on an inconclusive round" % _seconds(settings.watch_s or 0),
    }[outcome.stop_reason]
    if not failing:  # the last round was fine, just not enough of them in a row
        failures = "%d of %d required consecutive all-ok rounds" % (
            outcome.consecutive_successes, settings.consecutive_successes)
    word = "inconclusive" if outcome.verdict == "inconclusive" else "unhealthy"
    return "%s: %s (%s, %s)" % (word, failures, where, reason)


def result_dict(outcome, settings):
    """The module's return values apart from `changed`."""
    return dict(
        healthy=outcome.healthy,
        checks=[result.as_dict() for result in outcome.results],
        rounds=outcome.rounds,
        consecutive_successes=outcome.consecutive_successes,
        consecutive_failures=outcome.consecutive_failures,
        consecutive_inconclusive=outcome.consecutive_inconclusive,
        verdict=outcome.verdict,
        inconclusive=outcome.verdict == "inconclusive",
        elapsed_s=round(outcome.elapsed_s, 3),
        first_ok_after_s=None if outcome.first_ok_after_s is None else round(outcome.first_ok_after_s, 3),
        starting_rounds=outcome.starting_rounds,
        up_after_s=outcome.up_after_s,
        failing_since=outcome.failing_since,
        history=list(outcome.history),
        msg=summary(outcome, settings),
    )


def validation_result(checks):
    """The module's return values for validate_only: the checks, nothing probed."""
    kinds = ", ".join("%s (%s)" % (check.name, check.type) for check in checks)
    return dict(
        healthy=None,
        checks=[check.describe().as_dict() for check in checks],
        rounds=0,
        consecutive_successes=0,
        consecutive_failures=0,
        consecutive_inconclusive=0,
        verdict=None,
        inconclusive=None,
        elapsed_s=0.0,
        first_ok_after_s=None,
        starting_rounds=0,
        up_after_s=None,
        history=[],
        msg="valid: %s: %s; nothing probed" % (_plural(len(checks), "check"), kinds),
    )
