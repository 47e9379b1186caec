# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of module_utils/_health.py: parsing, the polling rules (on a fake clock), the
parallel round, and the HTTP/TCP probes against real servers on 127.0.0.1.

The servers here (ScriptedServer, silent_listener, closed_port) are also used by
tests/unit/plugins/modules/test_health_check.py.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import socket
import ssl
import threading
import time

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _docker, _health
from ansible_collections.lastgood.rollback.plugins.module_utils._health import (
    HealthSpecError,
    PollSettings,
    parse_checks,
)


# -- local servers (127.0.0.1 only) ----------------------------------------------------------

class ScriptedServer:
    """An HTTP server on 127.0.0.1:<free port> whose answers come from `respond(n, handler)`.

    `respond` gets the 1-based number of the request and returns (status, body, delay_s[, headers]).
    Every request is recorded (method, path, headers).
    """

    def __init__(self, respond=None, tls_context=None):
        self.respond = respond or (lambda n, handler: (200, b"ok", 0))
        self.requests = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def _answer(self):
                with server._lock:
                    server.requests.append((self.command, self.path, dict(self.headers)))
                    number = len(server.requests)
                answer = server.respond(number, self)
                status, body, delay = answer[:3]
                extra = answer[3] if len(answer) > 3 else {}
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = _answer

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls_context is not None else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05),
                                        daemon=True)

    def url(self, path="/health"):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, path)

    @property
    def count(self):
        with self._lock:
            return len(self.requests)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def fail_first(count, bad_status=500):
    """A respond function: `count` answers with bad_status, then 200 for ever."""
    return lambda n, handler: (bad_status if n <= count else 200, b"ok", 0)


@contextlib.contextmanager
def silent_listener():
    """A port that accepts connections (kernel backlog) but never answers: requests time out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def closed_port():
    """A port on 127.0.0.1 nobody listens on (connection refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def check_spec(**options):
    """A `checks` entry as the argument spec hands it over (every option present)."""
    spec = {key: None for key in _health.CHECK_ARGUMENT_SPEC}
    spec["timeout_s"] = 2.0
    spec.update(options)
    return spec


def one_check(**options):
    return parse_checks([check_spec(**options)], environ={})[0]


# -- parsing -------------------------------------------------------------------------------

def test_type_is_inferred_from_url_or_port_and_defaults_apply():
    http_check, tcp_check = parse_checks(
        [check_spec(name="web", url="http://127.0.0.1:1/health"), check_spec(name="sock", port=22)],
        environ={})
    assert (http_check.type, http_check.status, http_check.method) == ("http", [200], "GET")
    assert (tcp_check.type, tcp_check.host, tcp_check.port) == ("tcp", "127.0.0.1", 22)


def test_postgres_defaults_and_pgpassword_fallback():
    check = parse_checks([check_spec(name="db", type="postgres")], environ={"PGPASSWORD": "from-env"})[0]
    assert (check.host, check.port, check.user, check.database) == ("127.0.0.1", 5432, "postgres", "postgres")
    assert check.password == "from-env"
    explicit = parse_checks([check_spec(name="db", type="postgres", password="given")],
                            environ={"PGPASSWORD": "from-env"})[0]
    assert explicit.password == "given"


def test_type_cannot_be_inferred():
    with pytest.raises(HealthSpecError, match=r"check 'x': type is required"):
        one_check(name="x", host="127.0.0.1")


@pytest.mark.parametrize("url, reason", [
    ("htp://127.0.0.1/", "scheme must be http or https"),
    ("127.0.0.1:8080/health", "scheme must be http or https"),
    ("http:///health", "no host"),
    ("http://127.0.0.1 /health", "whitespace"),
    ("http://127.0.0.1:99999/", "url port"),
    ("http://127.0.0.1:0/", "url port"),
    ("http://[::1/", "url "),
    ("", "url is empty"),
])
def test_malformed_urls_are_refused_naming_the_check(url, reason):
    with pytest.raises(HealthSpecError) as info:
        one_check(name="app-health", url=url)
    message = str(info.value)
    assert message.startswith("check 'app-health': malformed url: ")
    assert reason in message
    assert "\n" not in message


def test_invalid_regex_is_one_line():
    with pytest.raises(HealthSpecError) as info:
        one_check(name="web", url="http://127.0.0.1/", body_regex="ok(")
    assert "check 'web': invalid body_regex 'ok('" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    (dict(url="http://127.0.0.1/", port=80), "port not valid for type http"),
    (dict(type="tcp", url="http://127.0.0.1/", port=80), "url not valid for type tcp"),
    (dict(type="tcp"), "port is required for type tcp"),
    (dict(port=70000), "port 70000 is not in 1-65535"),
    (dict(url="http://127.0.0.1/", status=[]), "at least one HTTP status code"),
    (dict(url="http://127.0.0.1/", status=[200, 999]), "status 999 is not an HTTP status code"),
    (dict(url="http://127.0.0.1/", max_latency_ms=0), "max_latency_ms must be greater than 0"),
    (dict(url="http://127.0.0.1/", timeout_s=0), "timeout_s must be greater than 0"),
    (dict(url="http://127.0.0.1/", method="GE T"), "invalid method"),
    (dict(url="http://127.0.0.1/", headers={"X-A": "a\r\nInjected: 1"}), "invalid header 'X-A'"),
    (dict(type="container"), "needs project_dir or project_name"),
    (dict(type="container", project_name="p", files=["compose.yaml"]), "files needs project_dir"),
    (dict(type="container", project_name="p", services=[]), "services must be non-empty"),
    (dict(type="postgres", user=""), "user must not be empty"),
])
def test_invalid_specifications(options, message):
    with pytest.raises(HealthSpecError, match=message):
        one_check(name="c", **options)


def test_names_must_be_unique_and_checks_present():
    with pytest.raises(HealthSpecError, match="duplicate check name 'a'"):
        parse_checks([check_spec(name="a", port=1), check_spec(name="a", port=2)], environ={})
    with pytest.raises(HealthSpecError, match="checks must not be empty"):
        parse_checks([], environ={})


@pytest.mark.parametrize("options, message", [
    (dict(retries=-1), "retries must be 0 or more"),
    (dict(interval_s=-0.1), "interval_s must be 0 or more"),
    (dict(consecutive_successes=0), "consecutive_successes must be 1 or more"),
    (dict(consecutive_failures=0), "consecutive_failures must be 1 or more"),
    (dict(watch_s=0), "watch_s must be greater than 0"),
    (dict(retries=1, consecutive_successes=3), r"consecutive_successes=3 can never be reached with retries=1"),
])
def test_invalid_poll_settings(options, message):
    with pytest.raises(HealthSpecError, match=message):
        PollSettings(**options)


def test_watching_defaults_to_one_failed_round():
    assert PollSettings(watch_s=10).consecutive_failures == 1
    assert PollSettings(retries=3).consecutive_failures is None


# -- the polling rules, on a fake clock --------------------------------------------------------

class FakeTime:
    """A clock plus a round runner that replays a script of round outcomes (True = all ok)."""

    def __init__(self, script, round_s=0.1):
        self.now = 100.0
        self.script = list(script)
        self.round_s = round_s
        self.sleeps = []
        self.round_starts = []
        self.check = one_check(name="app", port=1)

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.sleeps.append(round(seconds, 6))
        self.now += seconds

    def run_round(self):
        self.round_starts.append(round(self.now - 100.0, 6))
        ok = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.now += self.round_s
        return [_health.CheckResult(self.check, ok=ok, latency_ms=1.0, error=None if ok else "HTTP 500 (expected 200)")]

    def poll(self, **settings):
        return _health.poll(self.run_round, PollSettings(**settings), clock=self.clock, sleep=self.sleep)


def test_first_all_ok_round_ends_the_wait():
    fake = FakeTime([False, False, True, False])
    outcome = fake.poll(retries=10, interval_s=1.0)
    assert outcome.healthy
    assert outcome.rounds == 3
    assert fake.sleeps == [1.0, 1.0]
    assert outcome.first_ok_after_s == pytest.approx(2.3)
    assert list(outcome.history) == [["app"], ["app"], []]


def test_consecutive_successes_must_come_in_a_row():
    fake = FakeTime([False, True, False, True, True, True, False])
    outcome = fake.poll(retries=10, interval_s=0.5, consecutive_successes=3)
    assert outcome.healthy and outcome.rounds == 6 and outcome.consecutive_successes == 3
    assert outcome.first_ok_after_s == pytest.approx(0.7)  # the first all-ok round, not the third


def test_retries_count_rounds_after_the_first():
    fake = FakeTime([False])
    outcome = fake.poll(retries=4, interval_s=0.5)
    assert not outcome.healthy and outcome.rounds == 5 and outcome.stop_reason == "retries"
    assert FakeTime([False]).poll().rounds == 1  # retries=0: one round, no sleep


def test_deadline_shortens_the_last_sleep_and_no_round_starts_after_it():
    fake = FakeTime([False], round_s=0.1)
    outcome = fake.poll(retries=1000, interval_s=1.0, deadline_s=2.5)
    assert not outcome.healthy and outcome.stop_reason == "deadline"
    assert fake.round_starts == [0.0, 1.1, 2.2, 2.5]
    assert fake.sleeps == [1.0, 1.0, 0.2]
    assert max(fake.round_starts) <= 2.5
    assert outcome.elapsed_s == pytest.approx(2.6)  # deadline plus the one round running at it


def test_consecutive_failures_ends_a_wait_early_when_set():
    outcome = FakeTime([True, False, False, False, True]).poll(
        retries=10, consecutive_successes=2, consecutive_failures=3, interval_s=0.1)
    assert not outcome.healthy and outcome.rounds == 4 and outcome.stop_reason == "failures"


def test_watch_window_healthy_when_no_failure_streak():
    fake = FakeTime([True, False, True, True, False], round_s=0.1)
    outcome = fake.poll(watch_s=3.0, interval_s=1.0, consecutive_failures=2)
    assert outcome.healthy and outcome.stop_reason == "window"
    assert fake.round_starts == [0.0, 1.1, 2.2, 3.0]  # the last round at the end of the window
    assert outcome.rounds == 4


def test_a_window_closing_in_a_failure_streak_waits_for_the_streak_to_be_decided():
    # Too few rounds fit in the window to reach the limit: the rounds after it decide.
    fake = FakeTime([True, True, False, False, False, True], round_s=0.1)
    outcome = fake.poll(watch_s=3.0, interval_s=1.0, consecutive_failures=3)
    assert not outcome.healthy and outcome.stop_reason == "failures" and outcome.verdict == "failed"
    assert fake.round_starts == [0.0, 1.1, 2.2, 3.0, 4.1]
    # A blip at the close that the next round clears is no streak.
    fake = FakeTime([True, True, True, False, True], round_s=0.1)
    outcome = fake.poll(watch_s=3.0, interval_s=1.0, consecutive_failures=3)
    assert outcome.healthy and outcome.stop_reason == "window" and outcome.rounds == 5


def test_watch_window_unhealthy_at_the_first_failed_round_by_default():
    fake = FakeTime([True, True, False, True], round_s=0.1)
    outcome = fake.poll(watch_s=30.0, interval_s=1.0)
    assert not outcome.healthy and outcome.rounds == 3 and outcome.stop_reason == "failures"


def test_watch_ignores_consecutive_successes_and_retries():
    fake = FakeTime([True], round_s=0.0)
    outcome = fake.poll(watch_s=2.0, interval_s=0.5, retries=0)
    assert outcome.healthy and outcome.rounds == 5


def test_history_keeps_the_last_50_rounds():
    outcome = FakeTime([False] * 60 + [True], round_s=0.0).poll(retries=100, interval_s=0.0)
    assert outcome.rounds == 61
    assert len(outcome.history) == 50
    assert list(outcome.history)[-1] == [] and list(outcome.history)[0] == ["app"]


def test_messages():
    fake = FakeTime([False, True], round_s=0.2)
    settings = PollSettings(retries=3, interval_s=0.0)
    outcome = _health.poll(fake.run_round, settings, clock=fake.clock, sleep=fake.sleep)
    assert _health.summary(outcome, settings) == "healthy: 1/1 checks ok after 2 rounds (0.4 s)"

    fake = FakeTime([False], round_s=0.5)
    settings = PollSettings(retries=2, interval_s=0.0)
    outcome = _health.poll(fake.run_round, settings, clock=fake.clock, sleep=fake.sleep)
    assert _health.summary(outcome, settings) == \
        "unhealthy: app: HTTP 500 (expected 200) (3 rounds in 1.5 s, retries exhausted)"

    fake = FakeTime([True, False, True], round_s=0.0)
    settings = PollSettings(retries=2, interval_s=0.0, consecutive_successes=2)
    outcome = _health.poll(fake.run_round, settings, clock=fake.clock, sleep=fake.sleep)
    assert _health.summary(outcome, settings).startswith(
        "unhealthy: 1 of 2 required consecutive all-ok rounds (3 rounds")

    fake = FakeTime([True], round_s=0.0)
    settings = PollSettings(watch_s=1.0, interval_s=0.5)
    outcome = _health.poll(fake.run_round, settings, clock=fake.clock, sleep=fake.sleep)
    assert _health.summary(outcome, settings) == \
        "healthy: watched 1.0 s without a failed round (3 rounds in 1.0 s)"


# -- one round: parallel, bounded -------------------------------------------------------------

class SleepyCheck(_health.Check):
    type = "tcp"

    def __init__(self, name, sleep_s, timeout_s=2.0, outcome=True):
        super().__init__(dict(name=name, timeout_s=timeout_s))
        self.sleep_s = sleep_s
        self.outcome = outcome

    def probe(self):
        time.sleep(self.sleep_s)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return _health.CheckResult(self, ok=self.outcome, latency_ms=self.sleep_s * 1000)


def test_round_runs_checks_in_parallel():
    checks = [SleepyCheck("c%d" % i, 0.3) for i in range(4)]
    started = time.monotonic()
    results = _health.run_round(checks)
    took = time.monotonic() - started
    assert [r.ok for r in results] == [True] * 4
    assert [r.name for r in results] == ["c0", "c1", "c2", "c3"]
    assert took < 0.6, "4 checks of 0.3 s took %.2f s: not parallel" % took


def test_round_gives_up_on_a_hung_probe_after_its_timeout():
    checks = [SleepyCheck("hung", 30, timeout_s=0.2), SleepyCheck("fine", 0.0)]
    started = time.monotonic()
    hung, fine = _health.run_round(checks, grace_s=0.3)
    took = time.monotonic() - started
    assert took < 1.0
    assert not hung.ok and hung.error == "timed out after 0.2 s"
    assert fine.ok


def test_a_crashing_probe_becomes_an_error():
    (result,) = _health.run_round([SleepyCheck("bug", 0, outcome=KeyError("boom"))])
    assert result.ok is False
    assert result.error == "internal error: KeyError: 'boom'"


# -- HTTP probes against real servers ------------------------------------------------------------

def test_http_ok_and_status_reported():
    with ScriptedServer() as server:
        result = one_check(name="web", url=server.url()).probe()
    assert result.ok and result.status == 200 and result.error is None
    assert 0 < result.latency_ms < 1000
    assert result.as_dict()["latency_ms"] == round(result.latency_ms, 1)


def test_http_wrong_status():
    with ScriptedServer(fail_first(10)) as server:
        result = one_check(name="web", url=server.url()).probe()
        listed = one_check(name="web", url=server.url(), status=[200, 204]).probe()
        accepted = one_check(name="web", url=server.url(), status=[500]).probe()
    assert not result.ok and result.status == 500
    assert result.error == "HTTP 500 (expected 200)"
    assert listed.error == "HTTP 500 (expected 200, 204)"
    assert accepted.ok


def test_http_body_regex():
    with ScriptedServer(lambda n, h: (200, b'{"status": "degraded"}', 0)) as server:
        bad = one_check(name="web", url=server.url(), body_regex='"status": "ok"').probe()
        good = one_check(name="web", url=server.url(), body_regex=r'"status":\s*"(ok|degraded)"').probe()
    assert not bad.ok and bad.error == "body does not match '\"status\": \"ok\"'"
    assert good.ok


def test_http_latency_limit():
    with ScriptedServer(lambda n, h: (200, b"ok", 0.3)) as server:
        slow = one_check(name="web", url=server.url(), max_latency_ms=100).probe()
        relaxed = one_check(name="web", url=server.url(), max_latency_ms=2000).probe()
    assert not slow.ok and slow.status == 200
    assert slow.error.startswith("latency ") and slow.error.endswith(" ms > 100 ms")
    assert 300 <= slow.latency_ms < 1500
    assert relaxed.ok


def test_http_timeout():
    with silent_listener() as port:
        started = time.monotonic()
        result = one_check(name="web", url="http://127.0.0.1:%d/" % port, timeout_s=0.3).probe()
        took = time.monotonic() - started
    assert not result.ok and result.error == "timed out after 0.3 s"
    assert 0.25 < took < 1.0


def test_http_connection_refused():
    result = one_check(name="web", url="http://127.0.0.1:%d/" % closed_port()).probe()
    assert not result.ok and result.error == "connection refused" and result.status is None


def test_http_redirect_is_not_followed():
    def respond(n, handler):
        if handler.path == "/health":
            return 302, b"", 0, {"Location": "/login"}
        return 200, b"login page", 0
    with ScriptedServer(respond) as server:
        followed = one_check(name="web", url=server.url()).probe()
        accepted = one_check(name="web", url=server.url(), status=[302]).probe()
        paths = [request[1] for request in server.requests]
    assert followed.error == "HTTP 302 (expected 200)"
    assert accepted.ok
    assert paths == ["/health", "/health"]


def test_http_method_and_headers_are_sent():
    with ScriptedServer() as server:
        result = one_check(name="web", url=server.url(), method="head", headers={"X-Probe": 7}).probe()
        method, headers = server.requests[0][0], server.requests[0][2]
    assert result.ok
    assert method == "HEAD" and headers["X-Probe"] == "7"


def test_http_ignores_proxy_settings_from_the_environment(monkeypatch):
    with ScriptedServer() as proxy, ScriptedServer() as target:
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
            monkeypatch.setenv(name, "http://127.0.0.1:%d" % proxy.port)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        result = one_check(name="web", url=target.url()).probe()
        assert result.ok
        assert (proxy.count, target.count) == (0, 1)


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def test_https_certificate_validation(tls_context):
    with ScriptedServer(tls_context=tls_context) as server:
        verified = one_check(name="tls", url=server.url()).probe()
        unverified = one_check(name="tls", url=server.url(), validate_certs=False).probe()
    assert not verified.ok
    assert verified.error.startswith("TLS certificate verify failed: self")  # self-signed certificate
    assert unverified.ok and unverified.status == 200


# -- TCP and PostgreSQL probes ---------------------------------------------------------------------

def test_tcp_probe():
    with silent_listener() as port:
        assert one_check(name="sock", port=port).probe().ok
    refused = one_check(name="sock", port=closed_port()).probe()
    assert not refused.ok and refused.error == "connection refused"


def test_network_error_descriptions():
    # Name resolution is not exercised for real: a lookup could leave 127.0.0.0/8.
    assert _health.describe_os_error(socket.gaierror(-2, "Name or service not known"), 2.0, "db.example") \
        == "cannot resolve host 'db.example'"
    assert _health.describe_os_error(ConnectionResetError(104, "Connection reset by peer"), 2.0) \
        == "connection reset by peer"
    assert _health.describe_os_error(socket.timeout("timed out"), 1.5) == "timed out after 1.5 s"
    assert _health.describe_os_error(OSError(113, "No route to host"), 2.0) == "no route to host"


@pytest.mark.skipif(not _health.HAS_PSYCOPG2, reason="psycopg2 not installed")
def test_postgres_probe_connection_refused():
    check = parse_checks([check_spec(name="db", type="postgres", port=closed_port(), password="pw")],
                         environ={})[0]
    result = check.probe()
    assert not result.ok and result.error == "connection refused"


def test_postgres_error_messages():
    auth = ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication '
            'failed for user "postgres"\n')
    assert _health.describe_postgres_error(Exception(auth), 2.0) == \
        'FATAL: password authentication failed for user "postgres"'
    assert _health.describe_postgres_error(Exception("timeout expired\n"), 3.0) == "timed out after 3.0 s"


# -- container evaluation (the Docker part runs in tests/integration) --------------------------

def _container(name, service, state="running", health=None, exit_code=0):
    return dict(name=name, service=service, state=state, health=health, exit_code=exit_code)


def test_containers_running_and_healthy():
    by_service = {"app": [_container("p-app-1", "app", health="healthy")],
                  "static": [_container("p-static-1", "static")]}
    error, containers = _health.evaluate_containers("p", by_service)
    assert error is None
    assert [c["name"] for c in containers] == ["p-app-1", "p-static-1"]


def test_containers_problems():
    by_service = {"app": [_container("p-app-1", "app", health="unhealthy"),
                          _container("p-app-2", "app", health="starting")],
                  "db": [_container("p-db-1", "db", state="exited", exit_code=1)]}
    error = _health.evaluate_containers("p", by_service)[0]
    assert error == "p-app-1 is unhealthy; p-app-2 is starting; p-db-1 is exited (exit code 1)"
    error = _health.evaluate_containers("p", by_service, services=["cache"])[0]
    assert error == "service cache has no containers"
    error = _health.evaluate_containers("p", {})[0]
    assert error == "project 'p' has no containers"


def test_not_crashed_fails_only_for_crashed_containers():
    """What a deploy's watch asks of the containers it recreated: a crash, not readiness."""
    by_service = {"app": [_container("p-app-1", "app", health="starting"), _container("p-app-2", "app", health="unhealthy")],
                  "migrate": [_container("p-migrate-1", "migrate", state="exited", exit_code=0)],
                  "cron": [_container("p-cron-1", "cron", state="restarting", exit_code=0)],  # restart: always
                  "static": [_container("p-static-1", "static", state="created")]}
    assert _health.evaluate_containers("p", by_service, require="not_crashed")[0] is None
    # A service scaled to 0 (or a builder without containers) crashed nothing.
    assert _health.evaluate_containers("p", by_service, services=["app", "builder"], require="not_crashed")[0] is None
    assert _health.evaluate_containers("p", {}, require="not_crashed")[0] is None
    crashed = dict(by_service, app=[_container("p-app-1", "app", state="exited", exit_code=1)],
                   worker=[_container("p-worker-1", "worker", state="restarting", exit_code=2)],
                   db=[_container("p-db-1", "db", state="dead", exit_code=0)])
    error = _health.evaluate_containers("p", crashed, require="not_crashed")[0]
    assert error == "p-app-1 is exited (exit code 1); p-db-1 is dead (exit code 0); p-worker-1 is restarting (exit code 2)"
    # Restarting: its restart policy brings it back, it may crash only until what it needs is up.
    assert not _health.only_restarting(crashed) and not _health.only_restarting(by_service)
    assert _health.only_restarting(crashed, services=["worker", "static"])


def test_a_container_its_restart_policy_brings_back_is_a_start():
    check = one_check(name="new-containers", port=2)
    result = _health.CheckResult(check, ok=False, error="p-app-1 is restarting (exit code 1)")
    assert not result.not_up
    result.restarting = True
    assert result.not_up


def test_a_crash_counts_at_once_while_the_other_checks_wait_for_the_start():
    """Within startup_s a refused connection is a start, unless a recreated container crashed:
    the watch fails after consecutive_failures rounds, not after startup_s."""
    fake = FakeTime([False], round_s=0.0)
    web, containers = one_check(name="web", port=1), one_check(name="new-containers", port=2)

    def run_round():
        return [_health.CheckResult(web, ok=False, error="connection refused"),
                _health.CheckResult(containers, ok=False, error="p-app-1 is exited (exit code 1)")]

    outcome = _health.poll(run_round, PollSettings(watch_s=5.0, interval_s=0.5, consecutive_failures=3, startup_s=60.0),
                           clock=fake.clock, sleep=fake.sleep)
    assert not outcome.healthy and outcome.stop_reason == "failures"
    assert outcome.rounds == 3 and outcome.starting_rounds == 0 and outcome.elapsed_s == pytest.approx(1.0)


def test_only_starting_when_every_container_runs_and_some_healthcheck_has_not_passed_yet():
    starting = {"app": [_container("p-app-1", "app", health="starting")], "static": [_container("p-static-1", "static")]}
    assert _health.only_starting(starting)
    assert _health.only_starting(starting, services=["app"])
    assert not _health.only_starting(starting, services=["static"])  # nothing to wait for
    assert not _health.only_starting(dict(starting, db=[_container("p-db-1", "db", state="exited")]))
    assert not _health.only_starting(dict(starting, app=starting["app"] + [_container("p-app-2", "app", health="unhealthy")]))
    assert not _health.only_starting(starting, services=["app", "cache"])  # a service without containers
    assert not _health.only_starting({})


def test_one_readiness_rule_serves_the_health_gate_and_the_service_waits():
    """The gate's message and the staged start's per-service reasons come from the same rule."""
    by_service = {"app": [_container("p-app-1", "app", state="created")],
                  "db": [_container("p-db-1", "db", state="dead", exit_code=137)],
                  "web": [_container("p-web-1", "web", health="starting")],
                  "static": [_container("p-static-1", "static", health="healthy")]}
    error = _health.evaluate_containers("p", by_service)[0]
    assert error == "p-app-1 is created; p-db-1 is dead (exit code 137); p-web-1 is starting"
    assert _docker.services_problems(by_service, ["app", "db", "web", "static", "cache"]) == {
        "app": "created", "db": "dead (exit code 137)", "web": "starting", "cache": "no container"}
    assert [_docker.still_starting(c[0]) for c in by_service.values()] == [False, False, True, False]
    assert [_docker.failed_for_good(c[0]) for c in by_service.values()] == [False, True, False, False]
    assert not _health.only_starting(by_service)  # a created container is not waiting for a healthcheck


def test_a_crash_its_restart_policy_brings_back_is_waited_for_an_unhealthy_run_is_not():
    """The engine shows `unhealthy` for a container between its crash and its restart (it sets that
    at every exit; the restart resets it to `starting`): a wait goes on until its deadline."""
    restarting = _container("p-app-1", "app", state="restarting", health="unhealthy", exit_code=1)
    assert not _docker.failed_for_good(restarting)
    assert _docker.container_problem(restarting) == "restarting"
    assert _docker.crash_problem(restarting) == "restarting (exit code 1)"
    assert _docker.failed_for_good(_container("p-app-1", "app", health="unhealthy"))
    assert _docker.failed_for_good(_container("p-app-1", "app", state="exited", exit_code=1))
    # In a watch's container check (ready), a service not up yet, as a healthcheck still starting is.
    by_service = {"app": [restarting], "web": [_container("p-web-1", "web", health="starting")],
                  "static": [_container("p-static-1", "static", health="healthy")]}
    assert not _health.only_starting(by_service) and _health.only_starting(by_service, restarting=True)
    for broken in (_container("p-db-1", "db", state="exited", exit_code=1), _container("p-db-1", "db", health="unhealthy")):
        assert not _health.only_starting(dict(by_service, db=[broken]), restarting=True)


# -- the pause after a failed round: ended early once containers are no longer starting ---------

class StartingCheck:
    """A container check whose containers stop starting after `flips_after` looks."""

    def __init__(self, name, flips_after):
        self.name = name
        self.flips_after = flips_after
        self.looks = 0

    def still_starting(self):
        self.looks += 1
        return self.looks < self.flips_after


def _result(check, ok, settling=False):
    result = _health.CheckResult(check, ok=ok, error=None if ok else "p-app-1 is starting")
    result.settling = settling
    return result


def test_pause_ends_as_soon_as_the_starting_containers_settle():
    fake = FakeTime([True])
    containers = StartingCheck("containers", flips_after=3)
    containers.type = "container"
    web = one_check(name="web", port=1)
    results = [_result(containers, ok=False, settling=True), _result(web, ok=True)]
    assert _health.pause([containers, web], 0.25, results, clock=fake.clock, sleep=fake.sleep, step_s=0.05) is True
    assert fake.sleeps == [0.05, 0.05, 0.05] and containers.looks == 3


def test_pause_sleeps_the_whole_interval_unless_only_starting_containers_failed():
    containers = StartingCheck("containers", flips_after=1)
    containers.type = "container"
    web = one_check(name="web", port=1)
    for results in ([_result(containers, ok=False, settling=True), _result(web, ok=False)],  # web fails too
                    [_result(containers, ok=False, settling=False)]):  # a container exited, say
        fake = FakeTime([True])
        assert _health.pause([containers, web], 0.25, results, clock=fake.clock, sleep=fake.sleep) is False
        assert fake.sleeps == [0.25]
    assert containers.looks == 0


def test_pause_never_outlasts_its_interval_when_containers_keep_starting():
    fake = FakeTime([True])
    containers = StartingCheck("containers", flips_after=1000)
    containers.type = "container"
    assert _health.pause([containers], 0.12, [_result(containers, ok=False, settling=True)],
                         clock=fake.clock, sleep=fake.sleep, step_s=0.05) is False
    assert fake.sleeps == [0.05, 0.05, 0.02] and sum(fake.sleeps) == pytest.approx(0.12)


class Recorder:
    """Stands for time.sleep and for pause(): both advance a FakeTime; the calls are kept."""

    def __init__(self, fake):
        self.fake = fake
        self.calls = []

    def sleep(self, seconds):
        self.calls.append("sleep")
        self.fake.sleep(seconds)

    def pause(self, seconds, results):
        assert [result.ok for result in results] == [False]
        self.calls.append("pause")
        self.fake.sleep(seconds)


def test_poll_pauses_only_after_failed_rounds_while_waiting():
    """Rounds that count towards consecutive_successes stay interval_s apart; a watch keeps its
    rhythm (its failure streak is measured in rounds interval_s apart)."""
    for watching, expected in ((False, ["pause", "sleep"]), (True, ["sleep"] * 3)):
        fake = FakeTime([False, True, True, True])
        recorder = Recorder(fake)
        settings = dict(watch_s=3.0, consecutive_failures=2) if watching else dict(retries=10, consecutive_successes=2)
        outcome = _health.poll(fake.run_round, PollSettings(interval_s=1.0, **settings), clock=fake.clock,
                               sleep=recorder.sleep, pause=recorder.pause)
        assert recorder.calls == expected and outcome.healthy, recorder.calls


class NotUpYet(FakeTime):
    """Rounds scripted as "down" (connection refused), True (ok) or False (an HTTP 500)."""

    def run_round(self):
        self.round_starts.append(round(self.now - 100.0, 6))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.now += self.round_s
        if step == "down":
            return [_health.CheckResult(self.check, ok=False, error="connection refused")]
        return [_health.CheckResult(self.check, ok=step, latency_ms=1.0, error=None if step else "HTTP 500 (expected 200)")]


def test_a_service_that_does_not_answer_yet_is_no_failure_during_startup():
    fake = NotUpYet(["down"] * 6 + [True], round_s=0.0)
    outcome = fake.poll(watch_s=2.0, interval_s=0.5, consecutive_failures=3, startup_s=10.0)
    assert outcome.healthy and outcome.starting_rounds == 6 and outcome.up_after_s == pytest.approx(3.0)
    # The window covers 2 s of a service that answers: it started again after the last refused round.
    assert fake.round_starts[-1] == pytest.approx(2.5 + 2.0)
    # Without startup_s the refused rounds are failed rounds, as before.
    outcome = NotUpYet(["down"] * 6 + [True], round_s=0.0).poll(watch_s=2.0, interval_s=0.5, consecutive_failures=3)
    assert not outcome.healthy and outcome.rounds == 3 and outcome.starting_rounds == 0


def test_a_wrong_answer_counts_at_once_and_startup_ends_at_its_limit():
    outcome = NotUpYet(["down", "down", False, False, False, True], round_s=0.0).poll(
        watch_s=5.0, interval_s=0.5, consecutive_failures=3, startup_s=10.0)
    assert not outcome.healthy and outcome.starting_rounds == 2 and outcome.rounds == 5
    assert outcome.up_after_s == pytest.approx(1.0)
    # Never answering: counted once startup_s has passed.
    outcome = NotUpYet(["down"], round_s=0.0).poll(watch_s=5.0, interval_s=0.5, consecutive_failures=3, startup_s=2.0)
    assert not outcome.healthy and outcome.stop_reason == "failures"
    assert outcome.starting_rounds == 4 and outcome.rounds == 7 and outcome.up_after_s is None
    assert outcome.elapsed_s == pytest.approx(3.0)


class TwoServices(FakeTime):
    """Rounds of two checks, web and api, each scripted as "down", True or False."""

    def __init__(self, script, **kw):
        super().__init__(script, **kw)
        self.checks = [one_check(name="web", port=1), one_check(name="api", port=2)]

    def run_round(self):
        self.round_starts.append(round(self.now - 100.0, 6))
        steps = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.now += self.round_s
        results = []
        for check, step in zip(self.checks, steps):
            if step == "down":
                # What a probe through a published port gets while nothing listens behind it.
                results.append(_health.CheckResult(check, ok=False, error="connection closed without an answer"))
            else:
                results.append(_health.CheckResult(check, ok=step, latency_ms=1.0, error=None if step else "HTTP 500"))
        return results


def test_one_service_answering_wrong_does_not_end_the_startup_of_another():
    fake = TwoServices([(False, "down"), (True, "down"), (True, "down"), (True, "down"), (True, True)], round_s=0.0)
    outcome = fake.poll(watch_s=2.0, interval_s=0.5, consecutive_failures=3, startup_s=10.0)
    assert outcome.healthy, outcome.history
    assert outcome.starting_rounds == 3 and outcome.up_after_s == pytest.approx(2.0)
