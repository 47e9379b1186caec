# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of module_utils/_metrics.py: the text format, the atomic textfile and the
counters kept across runs. (promtool validates the files in tests/integration/test_alert_rules.py.)"""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _metrics
from ansible_collections.lastgood.rollback.plugins.module_utils._metrics import MetricsError, record_run


def samples_of(path):
    with open(path, encoding="utf-8") as stream:
        return {(name, tuple(sorted(labels.items()))): value for name, labels, value in _metrics.parse(stream.read())}


def value(path, name, **labels):
    return samples_of(path).get((name, tuple(sorted(labels.items()))))


def test_label_values_are_escaped_and_parsed_back():
    text = _metrics.render([("m_total", {"project": 'a"b\\c\nd'}, 2)], {"m_total": ("counter", "Help.")})
    assert text == '# HELP m_total Help.\n# TYPE m_total counter\nm_total{project="a\\"b\\\\c\\nd"} 2\n'
    assert _metrics.parse(text) == [("m_total", {"project": 'a"b\\c\nd'}, 2.0)]


@pytest.mark.parametrize("number, text", [
    (3, "3"), (2.5, "2.5"), (float("nan"), "NaN"), (float("inf"), "+Inf"), (-float("inf"), "-Inf"), (1e20, "1e+20"),
])
def test_values(number, text):
    assert _metrics.format_value(number) == text


def test_families_stay_together_in_first_seen_order():
    text = _metrics.render([("b", {"x": "2"}, 1), ("a", {}, 1), ("b", {"x": "1"}, 1)], {})
    assert text.splitlines() == ["# TYPE b untyped", 'b{x="1"} 1', 'b{x="2"} 1', "# TYPE a untyped", "a 1"]


@pytest.mark.parametrize("samples", [[("bad-name", {}, 1)], [("m", {"bad-label": "x"}, 1)], [("m", {"__x": "y"}, 1)]])
def test_invalid_names_are_refused(samples):
    with pytest.raises(MetricsError):
        _metrics.render(samples)


def test_malformed_text_is_refused():
    with pytest.raises(ValueError, match="line 2"):
        _metrics.parse('ok 1\nm{a="x} 1\n')


def test_write_textfile_is_atomic_and_0644(tmp_path):
    old_umask = os.umask(0o077)
    try:
        path = _metrics.write_textfile(str(tmp_path), "x", [("m", {}, 1)])
    finally:
        os.umask(old_umask)
    assert path == str(tmp_path / "x.prom")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    inode = os.stat(path).st_ino
    _metrics.write_textfile(str(tmp_path), "x.prom", [("m", {}, 2)])
    assert os.stat(path).st_ino != inode  # replaced by rename, never rewritten in place
    assert sorted(os.listdir(tmp_path)) == ["x.prom"]  # no temporary file left
    with pytest.raises(MetricsError, match="does not exist"):
        _metrics.write_textfile(str(tmp_path / "missing"), "x", [])
    with pytest.raises(MetricsError, match="invalid metrics file name"):
        _metrics.write_textfile(str(tmp_path), "../x", [])


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = _metrics.write_textfile(str(tmp_path), "x", [("m", {}, 1)])
    with pytest.raises(MetricsError):
        _metrics.write_textfile(str(tmp_path), "x", [("m", {"bad-label": "x"}, 1)])
    assert value(path, "m") == 1 and sorted(os.listdir(tmp_path)) == ["x.prom"]


def test_record_run_counts_across_runs(tmp_path):
    directory = str(tmp_path)
    first = record_run(directory, "shop", "rollback", "images", "success", 12.5, 3600, 1000)
    assert first["previous"] == "no previous file"
    path = first["path"]
    assert os.path.basename(path) == "lastgood_shop.prom"
    assert value(path, "lastgood_rollbacks_total", project="shop", tier="images", result="success") == 1
    # The failed counter is there at 0 before the first failure, so increase() can see it.
    assert value(path, "lastgood_rollbacks_total", project="shop", tier="images", result="failed") == 0
    assert value(path, "lastgood_snapshot_timestamp_seconds", project="shop") == 1000 - 3600

    second = record_run(directory, "shop", "rollback", "images", "failed", 3, None, 2000)
    assert second["previous"] is None
    record_run(directory, "shop", "rollback", "config", "success", 1.5, 60, 3000)
    record_run(directory, "shop", "deploy", None, "success", 40, 5, 4000)
    record_run(directory, "shop", "deploy", None, "failed", 41, None, 5000)

    assert value(path, "lastgood_rollbacks_total", project="shop", tier="images", result="success") == 1
    assert value(path, "lastgood_rollbacks_total", project="shop", tier="images", result="failed") == 1
    assert value(path, "lastgood_rollbacks_total", project="shop", tier="config", result="success") == 1
    assert value(path, "lastgood_rollback_duration_seconds", project="shop", tier="images") == 3
    assert value(path, "lastgood_rollback_duration_seconds", project="shop", tier="config") == 1.5
    assert value(path, "lastgood_rollback_last_success_timestamp_seconds", project="shop") == 3000
    assert value(path, "lastgood_rollback_last_timestamp_seconds", project="shop") == 3000
    assert value(path, "lastgood_deploys_total", project="shop", result="success") == 1
    assert value(path, "lastgood_deploys_total", project="shop", result="failed") == 1
    assert value(path, "lastgood_deploy_duration_seconds", project="shop") == 41
    assert value(path, "lastgood_deploy_last_success_timestamp_seconds", project="shop") == 4000
    assert value(path, "lastgood_snapshot_age_seconds", project="shop") == 5  # None kept the previous
    assert value(path, "lastgood_metrics_written_timestamp_seconds", project="shop") == 5000
    text = open(path).read()
    for name, (kind, help_text) in _metrics.FAMILIES.items():
        assert "# HELP %s %s\n# TYPE %s %s\n" % (name, help_text, name, kind) in text


def test_projects_get_their_own_files_and_share_one_safely(tmp_path):
    directory = str(tmp_path)
    a = record_run(directory, "a b", "rollback", "images", "success", 1, None, 1)["path"]
    b = record_run(directory, "a_b", "rollback", "images", "success", 1, None, 2)["path"]
    assert a == b and os.path.basename(a) == "lastgood_a_b.prom"
    assert value(a, "lastgood_rollbacks_total", project="a b", tier="images", result="success") == 1
    assert value(a, "lastgood_rollbacks_total", project="a_b", tier="images", result="success") == 1
    other = record_run(directory, "other", "deploy", None, "success", 1, None, 3)["path"]
    assert other != a


def test_a_malformed_previous_file_restarts_the_counters(tmp_path):
    (tmp_path / "lastgood_shop.prom").write_text('lastgood_rollbacks_total{project="shop" 7\n')
    report = record_run(str(tmp_path), "shop", "rollback", "images", "success", 1, None, 1)
    assert report["previous"].startswith("previous file malformed (line 1:")
    assert value(report["path"], "lastgood_rollbacks_total", project="shop", tier="images", result="success") == 1


@pytest.mark.parametrize("args, message", [
    (("", "rollback", "images", "success", 1), "project must be a non-empty string"),
    (("p", "snapshot", "images", "success", 1), "kind must be one of rollback, deploy"),
    (("p", "rollback", "", "success", 1), "a rollback needs its tier"),
    (("p", "rollback", "images", "Bad Result", 1), "result must be a short lower-case word"),
    (("p", "rollback", "images", "success", -1), "duration_s must be a finite number >= 0"),
    (("p", "rollback", "images", "success", float("nan")), "duration_s must be a finite number >= 0"),
])
def test_bad_input_is_refused_and_writes_nothing(tmp_path, args, message):
    with pytest.raises(MetricsError, match=message):
        record_run(str(tmp_path), *args)
    assert os.listdir(tmp_path) == []
