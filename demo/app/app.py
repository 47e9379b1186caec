"""Demo application deployed (and rolled back) by the lastgood.rollback collection.

A standard-library-only HTTP server listening on 127.0.0.1:$APP_PORT (default 18080):

  GET /health   200 {"status": "ok", "version": ...}; 500 {"status": "failing"} when
                APP_BROKEN_HEALTH=1 (baked into the v2 image: the "bad release")
  GET /version  200, the version as plain text (in every release)
  GET /         200, a small HTML page
  GET /api      200 JSON; slowed down by APP_EXTRA_LATENCY_MS
  GET /metrics  Prometheus text format: request counters, a latency histogram, app info

APP_ERROR_RATE (0..1) makes that fraction of GET / and GET /api answer 500, so that tests
can drive error-rate based health gates. APP_STARTUP_DELAY_MS makes it start listening only
that long after it started, as a slow-starting application does.

It runs as PID 1 in its container, where the kernel applies no default action to SIGTERM,
so it installs its own handler to stop promptly on `docker stop`.
"""

import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "v1")
BROKEN_HEALTH = os.environ.get("APP_BROKEN_HEALTH", "0") == "1"
PORT = int(os.environ.get("APP_PORT", "18080"))
BIND = "127.0.0.1"


def _env_float(name, default, low, high):
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        sys.stderr.write(f"app: ignoring {name}={os.environ[name]!r}: not a number\n")
        value = float(default)
    return min(max(value, low), high)


ERROR_RATE = _env_float("APP_ERROR_RATE", 0, 0.0, 1.0)
EXTRA_LATENCY_S = _env_float("APP_EXTRA_LATENCY_MS", 0, 0.0, 60_000.0) / 1000.0
STARTUP_DELAY_S = _env_float("APP_STARTUP_DELAY_MS", 0, 0.0, 600_000.0) / 1000.0

# Known paths are reported as they are; anything else as "other", so that scanners hitting
# random URLs cannot blow up the number of time series.
KNOWN_PATHS = ("/", "/api", "/health", "/version", "/metrics")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Thread-safe request counters and a latency histogram over all requests."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests = {}  # (path, status) -> count
        self._bucket_counts = [0] * len(BUCKETS)  # non-cumulative; summed when rendered
        self._sum = 0.0
        self._count = 0

    def observe(self, path, status, seconds):
        label = path if path in KNOWN_PATHS else "other"
        with self._lock:
            key = (label, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self._bucket_counts[i] += 1
                    break
            self._sum += seconds
            self._count += 1

    def render(self):
        with self._lock:
            requests = sorted(self._requests.items())
            bucket_counts = list(self._bucket_counts)
            total_sum, count = self._sum, self._count
        lines = [
            "# HELP demo_app_info Static information about the running release.",
            "# TYPE demo_app_info gauge",
            f'demo_app_info{{version="{VERSION}"}} 1',
            "# HELP demo_http_requests_total HTTP requests answered, by path and status.",
            "# TYPE demo_http_requests_total counter",
        ]
        lines += [
            f'demo_http_requests_total{{path="{path}",status="{status}"}} {n}'
            for (path, status), n in requests
        ]
        lines += [
            "# HELP demo_http_request_duration_seconds Time to answer HTTP requests.",
            "# TYPE demo_http_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip(BUCKETS, bucket_counts):
            cumulative += n
            lines.append(f'demo_http_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines += [
            f'demo_http_request_duration_seconds_bucket{{le="+Inf"}} {count}',
            f"demo_http_request_duration_seconds_sum {total_sum:.6f}",
            f"demo_http_request_duration_seconds_count {count}",
        ]
        return "\n".join(lines) + "\n"


METRICS = Metrics()

INDEX_HTML = f"""<!doctype html>
<html><head><title>lastgood demo</title></head>
<body><h1>lastgood demo app</h1><p>version {VERSION}</p></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = f"lastgood-demo/{VERSION}"

    def do_GET(self):  # noqa: N802 (name required by BaseHTTPRequestHandler)
        self._start = time.monotonic()
        self._path = self.path.split("?", 1)[0]
        self._observed = False
        try:
            self._route(self._path)
        finally:
            if not self._observed:  # the route failed before answering
                self._observe(500)

    def _observe(self, status):
        # Counted before the answer leaves: a client that reads /metrics right after its
        # answer must find its own request there.
        self._observed = True
        METRICS.observe(self._path, status, time.monotonic() - self._start)

    def _route(self, path):
        if path == "/health":
            if BROKEN_HEALTH:
                return self._send_json(500, {"status": "failing"})
            return self._send_json(200, {"status": "ok", "version": VERSION})
        if path == "/version":
            return self._send(200, "text/plain; charset=utf-8", VERSION + "\n")
        if path == "/metrics":
            return self._send(200, "text/plain; version=0.0.4; charset=utf-8", METRICS.render())
        if path == "/":
            if self._injected_error():
                return self._send(500, "text/plain; charset=utf-8", "injected error\n")
            return self._send(200, "text/html; charset=utf-8", INDEX_HTML)
        if path == "/api":
            if EXTRA_LATENCY_S:
                time.sleep(EXTRA_LATENCY_S)
            if self._injected_error():
                return self._send_json(500, {"error": "injected"})
            return self._send_json(200, {"ok": True, "version": VERSION})
        return self._send_json(404, {"error": "not found"})

    @staticmethod
    def _injected_error():
        return ERROR_RATE > 0 and random.random() < ERROR_RATE

    def _send_json(self, status, obj):
        return self._send(status, "application/json", json.dumps(obj) + "\n")

    def _send(self, status, content_type, text):
        body = text.encode()
        self._observe(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return status

    def log_request(self, code="-", size="-"):
        """No access log: one line per request would flood `docker logs`.

        log_error() (malformed requests, timeouts) still writes to stderr.
        """


def _stop(signum, _frame):
    # Raised in the main thread, this unwinds serve_forever() at once; request threads are
    # daemon threads and do not hold up the exit.
    raise SystemExit(128 + signum if signum != signal.SIGTERM else 0)


def main():
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    time.sleep(STARTUP_DELAY_S)
    server = ThreadingHTTPServer((BIND, PORT), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
