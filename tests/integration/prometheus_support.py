"""A private Prometheus server and a load generator for the Prometheus gate tests and bench.

PrometheusServer runs Debian's `prometheus` binary (scripts/setup-engine.sh installs it) with
a temporary configuration and storage, listening on 127.0.0.1:<free port> and scraping the
given 127.0.0.1 targets every second. LoadGenerator sends a steady stream of GET requests to
one URL from a few threads and records when it first saw an HTTP 5xx answer.

Everything stays on 127.0.0.1; proxy settings of the environment are ignored.
"""

from __future__ import annotations

import http.client
import json
import math
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

try:
    from . import stacks
except ImportError:
    import stacks

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def have_prometheus() -> bool:
    return Path(PROMETHEUS).is_file() and Path(PROMTOOL).is_file()


class PrometheusServer:
    """`with PrometheusServer(["127.0.0.1:18080"]) as prom:` - started, ready, stopped afterwards."""

    def __init__(self, targets, scrape_interval_s: float = 1.0, job: str = "app"):
        self.targets = list(targets)
        self.scrape_interval_s = scrape_interval_s
        self.job = job
        self.port = stacks.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = None
        self._proc = None
        self._log = None

    def start(self, timeout: float = 60):
        self._dir = Path(tempfile.mkdtemp(prefix="lgt-prom-"))
        config = {
            "global": {"scrape_interval": f"{self.scrape_interval_s:g}s",
                       "evaluation_interval": f"{self.scrape_interval_s:g}s"},
            "scrape_configs": [{
                "job_name": self.job,
                "scrape_timeout": f"{self.scrape_interval_s:g}s",
                "static_configs": [{"targets": self.targets}],
            }],
        }
        # YAML accepts JSON.
        (self._dir / "prometheus.yml").write_text(json.dumps(config))
        self._log = open(self._dir / "prometheus.log", "w")
        self._proc = subprocess.Popen(
            [PROMETHEUS,
             f"--config.file={self._dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self._dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self._dir)
        try:
            stacks.wait_until(self._ready, timeout, interval=0.1, message=f"prometheus on {self.url} ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self):
        if self._proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self._proc.returncode}:\n{self.log()}")
        try:
            with _NO_PROXY.open(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except (OSError, http.client.HTTPException):
            return False

    def log(self) -> str:
        try:
            return (self._dir / "prometheus.log").read_text()[-4000:]
        except OSError:
            return ""

    def query(self, promql: str):
        """The `data.result` of an instant query (raises on an API error)."""
        body = urllib.parse.urlencode({"query": promql}).encode()
        with _NO_PROXY.open(f"{self.url}/api/v1/query", data=body, timeout=5) as response:
            answer = json.loads(response.read())
        return answer["data"]["result"]

    def wait_for_series(self, promql: str, timeout: float = 60):
        """Poll until the query returns at least one series whose value is a number."""
        def has_data():
            try:
                result = self.query(promql)
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                return None
            values = [float(item["value"][1]) for item in result]
            return result if values and not any(math.isnan(value) for value in values) else None
        return stacks.wait_until(has_data, timeout, interval=0.25, message=f"data for {promql}")

    def stop(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LoadGenerator:
    """`threads` threads each GET `url` about `rate_per_thread` times a second until stop()."""

    def __init__(self, url: str, threads: int = 2, rate_per_thread: float = 40.0):
        self.url = url
        self.period = 1.0 / rate_per_thread
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses: dict = {}
        self.first_error_at = None  # time.monotonic() of the first 5xx answer
        self._threads = [threading.Thread(target=self._run, daemon=True, name=f"load-{n}") for n in range(threads)]

    def _run(self):
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                with _NO_PROXY.open(self.url, timeout=2) as response:
                    status = response.status
                    response.read()
            except urllib.error.HTTPError as answer:
                status = answer.code
            except (OSError, http.client.HTTPException):
                status = None  # the app restarting
            now = time.monotonic()
            with self._lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status is not None and status >= 500 and self.first_error_at is None:
                    self.first_error_at = now
            next_at = max(next_at + self.period, now)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def reset_errors(self):
        with self._lock:
            self.first_error_at = None

    def start(self):
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def error_rate_query(window: str) -> str:
    """Share of 5xx answers of the demo app over `window`; 0 while it has no 5xx series."""
    return (f'(sum(rate(demo_http_requests_total{{status=~"5.."}}[{window}])) or vector(0))'
            f" / sum(rate(demo_http_requests_total[{window}]))")


def p95_query(window: str) -> str:
    return f"histogram_quantile(0.95, sum by (le) (rate(demo_http_request_duration_seconds_bucket[{window}])))"


def set_error_rate(stack, rate: float):
    """Recreate the stack's app with APP_ERROR_RATE=rate (as a bad release would arrive)."""
    env_file = stack.dir / ".env"
    lines = [line for line in env_file.read_text().splitlines() if not line.startswith("APP_ERROR_RATE=")]
    lines.append(f"APP_ERROR_RATE={rate}")
    env_file.write_text("\n".join(lines) + "\n")
    stack.compose("up", "-d", "--no-deps", "--wait", "app")
