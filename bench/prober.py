"""A fixed-rate HTTP prober: what an end user would have seen during a rollback.

Sends GET requests at a fixed rate (20 Hz by default) from its own thread and records
(time, ok) for each. The longest outage is the longest run of failed probes, measured from
the first failed probe's start to the first succeeding probe's start.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Prober:
    def __init__(self, url, rate_hz=20.0, timeout_s=0.5):
        if not url.startswith("http://127."):
            raise ValueError("the prober only targets 127.0.0.0/8, got %s" % url)
        self.url = url
        self.period = 1.0 / rate_hz
        self.timeout_s = timeout_s
        self.samples = []  # (monotonic start, ok)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _probe(self):
        try:
            with _NO_PROXY.open(self.url, timeout=self.timeout_s) as response:
                response.read()
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
            return False

    def _run(self):
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append((started, self._probe()))
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def longest_outage_s(self, since=None, until=None):
        """Longest run of failures within [since, until] (monotonic seconds)."""
        longest, down_since = 0.0, None
        for started, ok in self.samples:
            if since is not None and started < since:
                continue
            if until is not None and started > until:
                break
            if not ok and down_since is None:
                down_since = started
            elif ok and down_since is not None:
                longest = max(longest, started - down_since)
                down_since = None
        if down_since is not None:
            end = until if until is not None else (self.samples[-1][0] if self.samples else down_since)
            longest = max(longest, end - down_since)
        return longest

    def first_ok_after(self, moment):
        """Seconds from `moment` to the first successful probe after it, or None."""
        for started, ok in self.samples:
            if started >= moment and ok:
                return started - moment
        return None

    def first_failure_after(self, moment):
        """Monotonic time of the first failed probe at or after `moment`, or None."""
        for started, ok in self.samples:
            if started >= moment and not ok:
                return started
        return None

    def counts(self):
        failed = sum(1 for _t, ok in self.samples if not ok)
        return len(self.samples), failed
