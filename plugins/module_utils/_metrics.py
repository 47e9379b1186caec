# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus text-format metrics of rollbacks and deploys, for node_exporter's textfile collector.

Each project gets one file, ``<directory>/lastgood_<project>.prom``. The collector reads every
``*.prom`` file of its directory at each scrape, so a file must never be seen half written:
it is written to a temporary file in the same directory and renamed over the old one.
Counters survive across runs because every run reads the previous file first; a lock file
(``.lastgood_<project>.prom.lock``, which the collector ignores) keeps two runs of the same
project from losing each other's counts.

Plain Python (no Ansible import): the orchestrator's end-of-run module calls record_run().
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import time

from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import write_atomic

KINDS = ("rollback", "deploy")

# name -> (type, help). The HELP text is the same in every file, so the collector can merge
# the families of several projects.
FAMILIES = {
    "lastgood_rollbacks_total": (
        "counter", "Rollbacks run by lastgood.rollback, by project, tier and result."),
    "lastgood_rollback_duration_seconds": (
        "gauge", "Duration of the last rollback of the project and tier, in seconds."),
    "lastgood_rollback_last_success_timestamp_seconds": (
        "gauge", "Unix time at which the last successful rollback of the project finished."),
    "lastgood_rollback_last_timestamp_seconds": (
        "gauge", "Unix time at which the last rollback of the project finished, whatever its result."),
    "lastgood_deploys_total": (
        "counter", "Deploys run by lastgood.rollback, by project and result."),
    "lastgood_deploy_duration_seconds": (
        "gauge", "Duration of the last deploy of the project, in seconds."),
    "lastgood_deploy_last_success_timestamp_seconds": (
        "gauge", "Unix time at which the last successful deploy of the project finished."),
    "lastgood_snapshot_age_seconds": (
        "gauge", "Age of the project's last known good snapshot when the last run finished, in seconds."),
    "lastgood_snapshot_timestamp_seconds": (
        "gauge", "Unix time at which the project's last known good snapshot was taken."),
    "lastgood_metrics_written_timestamp_seconds": (
        "gauge", "Unix time at which lastgood.rollback last wrote the project's metrics."),
}

SUCCESS = "success"
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESULT = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class MetricsError(Exception):
    """Bad input or an unwritable directory; the message is one line."""


# -- the text format ----------------------------------------------------------------------------

def escape_label_value(value):
    """A label value as the text format writes it between double quotes."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value):
    """A sample value in the text format: integers without a fraction, +Inf, -Inf, NaN."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2 ** 53:
        return str(int(value))
    return repr(value)


def format_sample(name, labels, value):
    if labels:
        inner = ",".join('%s="%s"' % (key, escape_label_value(labels[key])) for key in sorted(labels))
        return "%s{%s} %s" % (name, inner, format_value(value))
    return "%s %s" % (name, format_value(value))


def render(samples, families=None):
    """The text of a .prom file: HELP and TYPE, then the samples of each family together.

    `samples` is an iterable of (name, labels dict, value); families are written in the order
    their first sample comes, samples within a family sorted by their labels.
    """
    families = FAMILIES if families is None else families
    grouped = {}
    for name, labels, value in samples:
        if not _METRIC_NAME.match(name):
            raise MetricsError("invalid metric name %r" % (name,))
        for key in labels:
            if not _LABEL_NAME.match(key) or key.startswith("__"):
                raise MetricsError("invalid label name %r of %s" % (key, name))
        grouped.setdefault(name, {})[tuple(sorted(labels.items()))] = value
    lines = []
    for name, series in grouped.items():
        kind, text = families.get(name, ("untyped", None))
        if text:
            lines.append("# HELP %s %s" % (name, text.replace("\\", "\\\\").replace("\n", "\\n")))
        lines.append("# TYPE %s %s" % (name, kind))
        for key in sorted(series):
            lines.append(format_sample(name, dict(key), series[key]))
    return "\n".join(lines) + "\n" if lines else ""


def _parse_labels(text, position):
    """Parse `{a="x",b="y"}` starting at text[position] == "{"; returns (labels, next position)."""
    labels = {}
    position += 1
    while True:
        while position < len(text) and text[position] in " ,":
            position += 1
        if position < len(text) and text[position] == "}":
            return labels, position + 1
        match = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"").match(text, position)
        if not match:
            raise ValueError("malformed labels")
        position = match.end()
        value = []
        while True:
            if position >= len(text):
                raise ValueError("unterminated label value")
            char = text[position]
            if char == "\\":
                escaped = text[position + 1:position + 2]
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(escaped, "\\" + escaped))
                position += 2
            elif char == '"':
                position += 1
                break
            else:
                value.append(char)
                position += 1
        labels[match.group(1)] = "".join(value)


def parse(text):
    """The samples of a text-format file as (name, labels, value); raises ValueError when malformed."""
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            match = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(line)
            if not match:
                raise ValueError("no metric name")
            name, position, labels = match.group(0), match.end(), {}
            if position < len(line) and line[position] == "{":
                labels, position = _parse_labels(line, position)
            fields = line[position:].split()
            if not fields:
                raise ValueError("no value")
            samples.append((name, labels, float(fields[0])))
        except ValueError as exc:
            raise ValueError("line %d: %s" % (number, exc))
    return samples


# -- files ----------------------------------------------------------------------------------

def textfile_path(directory, basename):
    if not basename or "/" in basename or basename.startswith("."):
        raise MetricsError("invalid metrics file name %r" % (basename,))
    if not basename.endswith(".prom"):
        basename += ".prom"
    return os.path.join(directory, basename)


def write_textfile(directory, basename, samples, families=None):
    """Atomically replace directory/basename(.prom) with the samples; returns the path.

    The text goes to a temporary file in the same directory (the collector reads only
    `*.prom`, so it never sees the temporary name), is flushed to disk, given mode 0644 and
    renamed over the old file.
    """
    path = textfile_path(directory, basename)
    text = render(samples, families)
    if not os.path.isdir(directory):
        raise MetricsError("metrics directory %s does not exist" % directory)
    write_atomic(path, text, 0o644, prefix=".%s." % os.path.basename(path))
    return path


def project_basename(project):
    """The file name of a project's metrics: lastgood_<project>.prom, unsafe characters as _."""
    return "lastgood_%s.prom" % _UNSAFE_FILE_CHARS.sub("_", project)


def _validate_run(project, kind, tier, result, duration_s, snapshot_age_s, finished_at):
    if not isinstance(project, str) or not project:
        raise MetricsError("project must be a non-empty string")
    if kind not in KINDS:
        raise MetricsError("kind must be one of %s, not %r" % (", ".join(KINDS), kind))
    if kind == "rollback" and (not isinstance(tier, str) or not tier):
        raise MetricsError("a rollback needs its tier")
    if not isinstance(result, str) or not _RESULT.match(result):
        raise MetricsError("result must be a short lower-case word such as success or failed, not %r" % (result,))
    for key, value in (("duration_s", duration_s), ("snapshot_age_s", snapshot_age_s), ("finished_at", finished_at)):
        if value is None and key != "duration_s":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise MetricsError("%s must be a finite number >= 0, not %r" % (key, value))


def record_run(directory, project, kind, tier, result, duration_s, snapshot_age_s=None, finished_at=None):
    """Add one finished rollback or deploy to the project's metrics file; returns a report dict.

    kind          "rollback" or "deploy"
    tier          the rollback tier (images, config, ...); ignored for a deploy (may be None)
    result        success, failed, ... (a short lower-case word; "success" updates the
                  last-success timestamp)
    duration_s    how long the run took
    snapshot_age_s  age of the project's last known good snapshot at finished_at (None: keep
                  the previous value)
    finished_at   Unix time the run finished (default: now)

    Returns dict(path, previous): `previous` is None when the previous file was read, else
    why it was not (missing, or unreadable and started afresh: counters restart, which
    Prometheus treats as a counter reset).
    """
    _validate_run(project, kind, tier, result, duration_s, snapshot_age_s, finished_at)
    finished_at = time.time() if finished_at is None else float(finished_at)
    if not os.path.isdir(directory):
        raise MetricsError("metrics directory %s does not exist" % directory)
    basename = project_basename(project)
    path = os.path.join(directory, basename)
    lock_path = os.path.join(directory, ".%s.lock" % basename)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        samples, previous = _read_previous(path)
        _update(samples, project, kind, tier, result, duration_s, snapshot_age_s, finished_at)
        ordered = sorted(samples.items(), key=lambda item: (list(FAMILIES).index(item[0][0]), item[0][1]))
        write_textfile(directory, basename, [(name, dict(labels), value) for (name, labels), value in ordered])
    return dict(path=path, previous=previous)


def _read_previous(path):
    """{(name, labels tuple): value} of the known samples in the previous file.

    Samples of another project are kept too: two project names can map to the same file name.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        return {}, "no previous file"
    except OSError as exc:
        return {}, "previous file unreadable (%s); counters start again" % (exc.strerror or exc)
    try:
        parsed = parse(text)
    except ValueError as exc:
        return {}, "previous file malformed (%s); counters start again" % exc
    samples = {}
    for name, labels, value in parsed:
        if name in FAMILIES and labels.get("project"):
            samples[(name, tuple(sorted(labels.items())))] = value
    return samples, None


def _update(samples, project, kind, tier, result, duration_s, snapshot_age_s, finished_at):
    def key(name, **labels):
        labels["project"] = project
        return (name, tuple(sorted(labels.items())))

    if kind == "rollback":
        counter = key("lastgood_rollbacks_total", tier=tier, result=result)
        samples[counter] = samples.get(counter, 0) + 1
        samples[key("lastgood_rollback_duration_seconds", tier=tier)] = float(duration_s)
        samples[key("lastgood_rollback_last_timestamp_seconds")] = finished_at
        if result == SUCCESS:
            samples[key("lastgood_rollback_last_success_timestamp_seconds")] = finished_at
    else:
        counter = key("lastgood_deploys_total", result=result)
        samples[counter] = samples.get(counter, 0) + 1
        samples[key("lastgood_deploy_duration_seconds")] = float(duration_s)
        if result == SUCCESS:
            samples[key("lastgood_deploy_last_success_timestamp_seconds")] = finished_at
    # The failed counter exists from the first run on, at 0, so that increase() sees the
    # first failure (a series that appears with the value 1 shows no increase).
    if kind == "rollback":
        samples.setdefault(key("lastgood_rollbacks_total", tier=tier, result="failed"), 0)
    else:
        samples.setdefault(key("lastgood_deploys_total", result="failed"), 0)
    if snapshot_age_s is not None:
        samples[key("lastgood_snapshot_age_seconds")] = float(snapshot_age_s)
        samples[key("lastgood_snapshot_timestamp_seconds")] = finished_at - float(snapshot_age_s)
    samples[key("lastgood_metrics_written_timestamp_seconds")] = finished_at
