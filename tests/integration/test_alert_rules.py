# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""docs/prometheus/alerts.yml with the real promtool: the rules load, each alert fires on the
series it is meant for (docs/prometheus/alerts_test.yml), and a metrics file written by
module_utils/_metrics.py passes `promtool check metrics`."""

from __future__ import annotations

import subprocess
import sys

import pytest

try:
    from . import prometheus_support as support
    from . import stacks
except ImportError:
    import prometheus_support as support
    import stacks

if str(stacks.REPO_ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(stacks.REPO_ROOT / ".collections"))

from ansible_collections.lastgood.rollback.plugins.module_utils import _metrics  # noqa: E402

pytestmark = pytest.mark.skipif(not support.have_prometheus(),
                                reason="prometheus/promtool missing: run scripts/setup-engine.sh")

DOCS = stacks.REPO_ROOT / "docs" / "prometheus"
ALERTS = ("ServiceDown", "HighErrorRate", "HighLatencyP95", "LastKnownGoodSnapshotTooOld", "RollbackFailed")


def promtool(*args, cwd=DOCS, stdin=None):
    return subprocess.run([support.PROMTOOL, *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules():
    proc = promtool("check", "rules", "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: %d rules found" % len(ALERTS) in proc.stdout


def test_every_alert_fires_on_its_series():
    proc = promtool("test", "rules", "alerts_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    tests = (DOCS / "alerts_test.yml").read_text()
    for alert in ALERTS:
        assert "alertname: %s" % alert in tests, "no promtool test for %s" % alert


def test_a_broken_expectation_fails(tmp_path):
    """The unit tests can fail: expect ServiceDown where up stays 1."""
    (tmp_path / "alerts.yml").write_text((DOCS / "alerts.yml").read_text())
    (tmp_path / "broken_test.yml").write_text(
        "rule_files: [alerts.yml]\nevaluation_interval: 1m\ntests:\n"
        "  - interval: 1m\n    input_series:\n      - series: 'up{job=\"app\", instance=\"x\"}'\n"
        "        values: '1 1 1 1 1'\n    alert_rule_test:\n      - eval_time: 4m\n"
        "        alertname: ServiceDown\n        exp_alerts:\n          - exp_labels: {severity: critical, job: app, instance: x}\n")
    proc = promtool("test", "rules", "broken_test.yml", cwd=tmp_path)
    assert proc.returncode != 0


def test_recorded_runs_pass_promtool_check_metrics(tmp_path):
    _metrics.record_run(str(tmp_path), "shop", "rollback", "images", "success", 12.5, 3600, 1700000000)
    _metrics.record_run(str(tmp_path), "shop", "rollback", "images", "failed", 3.25, None, 1700000100)
    _metrics.record_run(str(tmp_path), "shop", "deploy", None, "success", 40, 10, 1700000200)
    _metrics.record_run(str(tmp_path), 'odd "name"\\x', "rollback", "config", "success", 1, 0, 1700000300)
    files = sorted(tmp_path.glob("*.prom"))
    assert len(files) == 2
    for path in files:
        proc = promtool("check", "metrics", cwd=tmp_path, stdin=path.read_text())
        assert proc.returncode == 0, "%s: %s%s" % (path.name, proc.stdout, proc.stderr)
        assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr
