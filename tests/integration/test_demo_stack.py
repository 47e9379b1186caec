"""The demo stack itself: images, health checks, the broken v2 release, metrics, shutdown
and PostgreSQL authentication. Every wait polls against a deadline; nothing sleeps a fixed
time."""

from __future__ import annotations

import re
import time

import psycopg2
import pytest

try:
    from . import stacks
except ImportError:
    import stacks

SERVICES = ("app", "db", "static")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value}; comments skipped."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_two_stacks_come_up_healthy_side_by_side(stack, docker_client):
    first, second = stack(), stack()
    assert first.project != second.project
    assert set(first.ports.values()).isdisjoint(second.ports.values())
    v1_id = docker_client.images.get(stacks.APP_V1).id
    for each in (first, second):
        assert {s: each.health(s) for s in SERVICES} == dict.fromkeys(SERVICES, "healthy")
        assert each.image_id("app") == v1_id
        assert each.app_image == f"lastgood-demo/app:{each.project}"
        status, body = each.get("static", "/")
        assert status == 200
        assert "lastgood demo" in body
        # A git work tree of its own, with everything committed.
        assert stacks.run(["git", "-C", each.dir, "status", "--porcelain"]).stdout == ""


def test_v1_answers(stack):
    s = stack()
    assert s.get_json("app", "/health") == (200, {"status": "ok", "version": "v1"})
    assert s.get("app", "/version") == (200, "v1\n")
    status, body = s.get("app", "/")
    assert status == 200
    assert "version v1" in body
    assert s.get_json("app", "/api") == (200, {"ok": True, "version": "v1"})
    assert s.get("app", "/no-such-page")[0] == 404


def test_v2_release_fails_its_health_check(stack, docker_client):
    s = stack()
    v1_container = s.container_id("app")
    s.tag_app(stacks.APP_V2)

    s.compose("up", "-d", "--no-deps", "app")
    deployed = time.monotonic()

    # compose noticed that the image behind the reference changed and recreated the container.
    assert s.container_id("app") != v1_container
    assert s.image_id("app") == docker_client.images.get(stacks.APP_V2).id
    stacks.wait_until(
        lambda: _status_or_none(s, "/health") == 500, timeout=5, message="v2 /health answers 500"
    )
    assert s.get_json("app", "/health") == (500, {"status": "failing"})
    assert s.get("app", "/version") == (200, "v2\n")

    s.wait_health("app", "unhealthy", timeout=10 - (time.monotonic() - deployed))
    # The rest of the stack is unaffected.
    assert s.health("db") == "healthy"
    assert s.health("static") == "healthy"


def _status_or_none(s, path):
    try:
        return s.get("app", path)[0]
    except OSError:  # not listening yet
        return None


def test_metrics(stack):
    s = stack()
    for path in ("/", "/api", "/api", "/no-such-page"):
        s.get("app", path)
    status, text = s.get("app", "/metrics")
    assert status == 200
    assert "# TYPE demo_http_requests_total counter" in text
    assert "# TYPE demo_http_request_duration_seconds histogram" in text

    samples = parse_metrics(text)
    assert samples['demo_app_info{version="v1"}'] == 1
    assert samples['demo_http_requests_total{path="/",status="200"}'] >= 1
    assert samples['demo_http_requests_total{path="/api",status="200"}'] >= 2
    # Unknown paths are folded into one label value.
    assert samples['demo_http_requests_total{path="other",status="404"}'] >= 1
    # The health check's requests are counted too.
    assert samples['demo_http_requests_total{path="/health",status="200"}'] >= 1

    buckets = [
        (name, value) for name, value in samples.items() if name.startswith("demo_http_request_duration_seconds_bucket")
    ]
    assert len(buckets) >= 5
    assert buckets[-1][0] == 'demo_http_request_duration_seconds_bucket{le="+Inf"}'
    values = [value for _name, value in buckets]
    assert values == sorted(values), "histogram buckets must be cumulative"
    count = samples["demo_http_request_duration_seconds_count"]
    assert count == values[-1] == sum(v for k, v in samples.items() if k.startswith("demo_http_requests_total"))
    assert count >= 4
    assert samples["demo_http_request_duration_seconds_sum"] >= 0


def test_error_rate_and_latency_injection(stack):
    s = stack(extra_env={"APP_ERROR_RATE": "1", "APP_EXTRA_LATENCY_MS": "300"})
    assert s.get("app", "/")[0] == 500
    start = time.monotonic()
    assert s.get("app", "/api")[0] == 500
    assert time.monotonic() - start >= 0.3
    # Health and version are never failed on purpose: the stack came up healthy.
    assert s.get("app", "/health")[0] == 200
    samples = parse_metrics(s.get("app", "/metrics")[1])
    assert samples['demo_http_requests_total{path="/",status="500"}'] == 1
    assert samples['demo_http_requests_total{path="/api",status="500"}'] == 1


def test_app_stops_promptly_on_sigterm(stack):
    s = stack()
    start = time.monotonic()
    s.compose("stop", "app")
    elapsed = time.monotonic() - start
    state = s.container("app").attrs["State"]
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0, "exit code 0 means the SIGTERM handler ran (not the SIGKILL)"
    assert elapsed < 2, f"docker compose stop app took {elapsed:.1f} s"


def test_static_stops_promptly(stack):
    s = stack()
    start = time.monotonic()
    s.compose("stop", "static")
    assert time.monotonic() - start < 3
    assert s.container("static").attrs["State"]["ExitCode"] == 0


def test_postgres_password_authentication(stack):
    s = stack()
    params = {"host": "127.0.0.1", "port": s.ports["db"], "user": "postgres", "connect_timeout": 5}

    with psycopg2.connect(dbname="app", password=s.password, **params) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), current_setting('server_version_num')::int")
            database, version = cur.fetchone()
    conn.close()
    assert database == "app"
    assert 150000 <= version < 160000

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(dbname="app", password="not-the-password", **params)

    # The password was handed over in a file: no process shows it in its arguments.
    processes = s.container("db").top(ps_args="-eo pid,args")["Processes"]
    assert processes
    assert not [p for p in processes if s.password in " ".join(p)]


def test_postgres_shuts_down_cleanly_and_keeps_its_data(stack):
    s = stack()
    params = {"host": "127.0.0.1", "port": s.ports["db"], "user": "postgres", "password": s.password,
              "dbname": "app", "connect_timeout": 5}
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE marker (v text)")
        cur.execute("INSERT INTO marker VALUES ('kept')")
    # An open client session must not hold up the stop (fast shutdown, not "smart").
    start = time.monotonic()
    s.compose("stop", "db")
    elapsed = time.monotonic() - start
    conn.close()
    assert s.container("db").attrs["State"]["ExitCode"] == 0
    assert elapsed < 10, f"docker compose stop db took {elapsed:.1f} s"
    logs = s.compose("logs", "--no-color", "db").stdout
    assert re.search(r"database system is shut down", logs)

    s.compose("start", "db")
    s.wait_health("db", "healthy", timeout=30)
    with psycopg2.connect(**params) as conn2, conn2.cursor() as cur:
        cur.execute("SELECT v FROM marker")
        assert cur.fetchall() == [("kept",)]
    conn2.close()
