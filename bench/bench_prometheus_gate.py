"""Issue figure for the Prometheus gate: an injected 20% error rate is detected within the
query window plus one scrape interval.

A private Prometheus (127.0.0.1, scrape interval 1 s) scrapes the demo app of a disposable
demo stack under a steady load. A health_check watch (error-rate query over WINDOW_S, threshold
5%, rounds every 0.25 s) runs while the app is recreated with APP_ERROR_RATE=0.2; the time is
counted from the first 5xx answer the load generator received to the round that failed.
Runs RUNS rounds and prints each, the median and the worst.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from common import REPO, Stack, docker_client, median, temp_dir

sys.path.insert(0, str(REPO / ".collections"))

import prometheus_support as support  # noqa: E402  (tests/integration is on the path via common)
from ansible_collections.lastgood.rollback.plugins.module_utils import _health  # noqa: E402

RUNS = int(os.environ.get("RUNS", "3"))
WINDOW_S = 10
SCRAPE_S = 1.0
THRESHOLD = 0.05


def detect_once(stack, prom, load):
    """Seconds from the first injected error to the gate's failed round."""
    support.set_error_rate(stack, 0)
    query = support.error_rate_query("%ds" % WINDOW_S)
    # Start from a clean window: no 5xx left in it.
    deadline = time.monotonic() + WINDOW_S + 30
    while True:
        result = prom.query(query)
        if result and float(result[0]["value"][1]) == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the error rate never went back to 0: %s" % result)
        time.sleep(0.25)
    checks = _health.parse_checks([{"name": "error-rate", "type": "prometheus", "url": prom.url,
                                    "query": query, "threshold": THRESHOLD, "comparison": "<", "timeout_s": 2}])
    settings = _health.PollSettings(interval_s=0.25, watch_s=WINDOW_S + 60, consecutive_failures=1)
    box = {}

    def watch():
        box["outcome"] = _health.poll(lambda: _health.run_round(checks), settings)
        box["ended_at"] = time.monotonic()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    load.reset_errors()
    support.set_error_rate(stack, 0.2)
    thread.join()
    outcome = box["outcome"]
    if outcome.verdict != "failed":
        raise RuntimeError("the gate did not fail: %s" % _health.summary(outcome, settings))
    return box["ended_at"] - load.first_error_at, outcome.results[0].value


def main():
    if not support.have_prometheus():
        print("prometheus/promtool missing: run scripts/setup-engine.sh")
        return 1
    client = docker_client()
    parent = temp_dir("lgt-bench-prom-")
    stack = Stack.create(parent, client, extra_env={"APP_ERROR_RATE": "0"})
    try:
        with support.PrometheusServer(["127.0.0.1:%d" % stack.ports["app"]], scrape_interval_s=SCRAPE_S) as prom:
            with support.LoadGenerator(stack.url("app", "/api")) as load:
                prom.wait_for_series(support.error_rate_query("%ds" % WINDOW_S))
                times = []
                for number in range(1, RUNS + 1):
                    seconds, value = detect_once(stack, prom, load)
                    times.append(seconds)
                    print("run %d: failure reported %.2f s after the first injected error (error rate seen %.1f%%)"
                          % (number, seconds, value * 100), flush=True)
    finally:
        stack.destroy()
    limit = WINDOW_S + SCRAPE_S
    worst = max(times)
    print("query window %d s, scrape interval %.0f s, threshold %.0f%%, injected error rate 20%%"
          % (WINDOW_S, SCRAPE_S, THRESHOLD * 100))
    print("time from error injection to the gate reporting failure: median %.2f s, worst %.2f s"
          % (median(times), worst))
    print("within window + one scrape interval (%.0f s): %s" % (limit, "yes" if worst <= limit else "NO"))
    return 0 if worst <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
