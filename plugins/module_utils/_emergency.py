# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The emergency procedures: the incident folder, the audit line, picking a snapshot that verifies.

An incident folder holds what the stack looked like when things went wrong, written before
anything is stopped::

    <incident_root>/<UTC ts>-<kind>/summary.json        container states (no environment), usage, errors
    <incident_root>/<UTC ts>-<kind>/compose-ps.txt      the project's containers, like `docker compose ps -a`
    <incident_root>/<UTC ts>-<kind>/logs/<name>.log     the last lines of each container's log
    <incident_root>/<UTC ts>-<kind>/record.json         how the procedure ended (written by `record`)
    <incident_root>/<UTC ts>-<kind>/SHA256SUMS          sha256 of every file above (sha256sum format)

Every Docker call is bounded (the client's timeout, and a deadline over the usage samples), so a
hung engine or a dead container never holds up an emergency stop.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import threading
import time

from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    APIError,
    DockerException,
    NotFound,
    container_summary,
    image_id,
    one_line,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    ManifestError,
    compact_timestamp,
    is_bad,
    isoformat,
    list_snapshots,
    load_manifest,
    read_bad_marker,
    sha256_file,
    utc_now,
    verify_files,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._snapshot_data import damaged_artifacts

SUMS = "SHA256SUMS"
SUMMARY = "summary.json"
RECORD = "record.json"
PS = "compose-ps.txt"
LOGS_DIR = "logs"
# What PostgreSQL logs at the end of a clean shutdown (a checkpoint was written: no recovery at start).
CLEAN_SHUTDOWN_LINES = ("database system is shut down",)
_KIND = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y%m%dT%H%M%SZ")


class EmergencyError(Exception):
    """A refused step; the message is one line."""


# --- time -----------------------------------------------------------------------------------

def parse_time(value):
    """An aware UTC datetime from the collection's timestamps (ISO with Z, or the compact id form)."""
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    text = str(value or "").strip()
    for fmt in _TIMESTAMP_FORMATS:
        try:
            return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EmergencyError("%r is not a timestamp (use 2026-11-30T08:45:12Z or 20261130T084512Z)" % value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def snapshot_time(snapshot_id, manifest):
    """When a snapshot was taken: its manifest's created_at, else its id."""
    for value in ((manifest or {}).get("created_at"), snapshot_id.split("-")[0]):
        if value:
            try:
                return parse_time(value)
            except EmergencyError:
                continue
    return None


# --- the incident folder --------------------------------------------------------------------

def check_kind(kind):
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise EmergencyError("kind %r must be lower-case letters, digits and '-' (at most 40)" % (kind,))
    return kind


def new_incident_dir(incident_root, kind, moment, check_mode=False):
    """A new directory <root>/<UTC ts>-<kind> (a counter is added when it exists)."""
    base = "%s-%s" % (compact_timestamp(moment), check_kind(kind))
    candidate, counter = base, 1
    while os.path.lexists(os.path.join(incident_root, candidate)):
        counter += 1
        candidate = "%s-%d" % (base, counter)
    path = os.path.join(incident_root, candidate)
    if not check_mode:
        os.makedirs(incident_root, mode=0o750, exist_ok=True)
        os.mkdir(path, 0o750)
    return path


def safe_file_part(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name or "unnamed").lstrip(".") or "unnamed"


def write_file(directory, rel, data):
    path = os.path.join(directory, rel)
    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def write_sums(directory):
    """(Re)write SHA256SUMS over every other file of the incident folder; returns {rel: sha256}."""
    sums = {}
    for parent, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, directory)
            if rel != SUMS:
                sums[rel] = sha256_file(path)
    write_file(directory, SUMS, "".join("%s  %s\n" % (digest, rel) for rel, digest in sorted(sums.items())))
    return sums


def container_details(attrs):
    """What the incident keeps of `docker inspect`: state and identity, never the environment."""
    summary = container_summary(attrs)
    state = attrs.get("State") or {}
    summary.update(
        finished_at=state.get("FinishedAt"),
        oom_killed=state.get("OOMKilled"),
        error=state.get("Error") or None,
        restart_count=attrs.get("RestartCount"),
        created=attrs.get("Created"),
        health_log=[dict(exit_code=entry.get("ExitCode"), output=(entry.get("Output") or "")[-500:], end=entry.get("End"))
                    for entry in ((state.get("Health") or {}).get("Log") or [])[-3:]],
    )
    return summary


def list_project_containers(client, project_name):
    """[(container id, details)] of the project's containers, one-off ones included, sorted by name."""
    found = []
    filters = {"label": ["com.docker.compose.project=%s" % project_name]}
    for item in client.api.containers(all=True, filters=filters):
        try:
            attrs = client.api.inspect_container(item["Id"])
        except NotFound:
            continue
        found.append((item["Id"], container_details(attrs)))
    return sorted(found, key=lambda pair: pair[1]["name"])


def cpu_percent(stats):
    """CPU use in percent, computed the way `docker stats` does from two samples (None without them)."""
    try:
        cpu = stats["cpu_stats"]
        pre = stats["precpu_stats"]
        delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
        cpus = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
    except (KeyError, TypeError):
        return None
    if system <= 0 or delta < 0:
        return None
    return round(delta / system * cpus * 100.0, 2)


def usage_of(stats):
    memory = stats.get("memory_stats") or {}
    cache = (memory.get("stats") or {}).get("inactive_file", (memory.get("stats") or {}).get("cache", 0)) or 0
    usage = memory.get("usage")
    return dict(
        cpu_percent=cpu_percent(stats),
        memory_bytes=(usage - cache) if usage is not None else None,
        memory_limit_bytes=memory.get("limit"),
        pids=(stats.get("pids_stats") or {}).get("current"),
    )


def sample_usage(client, container_ids, deadline_s):
    """{id: usage or {'error': ...}} of running containers, sampled in parallel, within deadline_s."""
    found = {}

    def sample(container_id):
        try:
            found[container_id] = usage_of(client.api.stats(container_id, stream=False))
        except (DockerException, ValueError, OSError) as exc:
            found[container_id] = dict(error=one_line(exc))

    threads = [threading.Thread(target=sample, args=(cid,), daemon=True) for cid in container_ids]
    for thread in threads:
        thread.start()
    ends = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, ends - time.monotonic()))
    for cid in container_ids:
        found.setdefault(cid, dict(error="no sample within %.0f s" % deadline_s))
    return found


def last_log_lines(client, container_id, lines):
    data = client.api.logs(container_id, stdout=True, stderr=True, tail=lines, timestamps=True)
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)


def render_ps(containers):
    header = ("NAME", "SERVICE", "STATE", "HEALTH", "EXIT", "OOM", "RESTARTS", "IMAGE")
    rows = [header] + [(c["name"], c["service"] or "-", c["state"] or "-", c["health"] or "-",
                        str(c["exit_code"]), "yes" if c["oom_killed"] else "no", str(c["restart_count"]),
                        (c["image_id"] or "")[7:19]) for c in containers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n" for row in rows)


def capture(client, project_name, services, directory, log_lines, deadline_s, write=True):
    """Diagnostics of a project into `directory` (unless not `write`); the summary dict.

    A failing Docker call is noted in `errors` and the capture goes on: a dead or vanished
    container, or an engine that stops answering, never fails it.
    """
    started = time.monotonic()
    errors = []
    try:
        listed = list_project_containers(client, project_name)
    except (DockerException, OSError) as exc:
        listed = []
        errors.append("listing the containers failed: %s" % one_line(exc))
    containers = [details for _cid, details in listed]
    running = [cid for cid, details in listed if details["state"] == "running"]
    usage = sample_usage(client, running, deadline_s) if running else {}
    for cid, details in listed:
        if cid in usage:
            details["usage"] = usage[cid]
    logs = {}
    for cid, details in listed:
        try:
            logs[details["name"]] = last_log_lines(client, cid, log_lines)
        except (DockerException, OSError) as exc:
            errors.append("logs of %s: %s" % (details["name"], one_line(exc)))
    summary = dict(
        project=project_name,
        captured_at=isoformat(utc_now()),
        services=sorted(services),
        services_without_container=sorted(set(services) - set(c["service"] for c in containers)),
        containers=containers,
        running=sorted(c["service"] or c["name"] for c in containers if c["state"] == "running"),
        not_running=sorted(c["service"] or c["name"] for c in containers if c["state"] != "running"),
        errors=errors,
        log_lines=log_lines,
    )
    files = []
    if write:
        for name, text in sorted(logs.items()):
            rel = os.path.join(LOGS_DIR, safe_file_part(name) + ".log")
            write_file(directory, rel, text)
            files.append(rel)
        write_file(directory, PS, render_ps(containers))
        files.append(PS)
    summary["capture_s"] = round(time.monotonic() - started, 3)
    if write:
        write_file(directory, SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        files.append(SUMMARY)
        write_sums(directory)
    summary["files"] = sorted(files)
    return summary


def shutdown_verdict(state, exit_code, evidence):
    """Whether a container shut down cleanly, from its state, exit code and clean-shutdown log lines.

    Not stopped (running, paused, restarting) or ended by a non-zero exit code (137: killed): False,
    whatever its log says, since a clean-shutdown line may be left from an earlier stop of the same
    container. Exited 0 with such a line: True. Otherwise None (nothing tells).
    """
    if state in ("running", "paused", "restarting") or exit_code not in (0, None):
        return False
    return True if evidence else None


def shutdown_report(client, project_name, services, log_lines=200):
    """Per service how its containers ended: state, exit code, and whether the log shows a clean shutdown.

    `clean` is True when the log ends with a clean-shutdown line (PostgreSQL's "database system is
    shut down"), False when it stopped with a non-zero exit code or is still running, None when
    the log says nothing either way (a data service that is not PostgreSQL).
    """
    report = {}
    for cid, details in list_project_containers(client, project_name):
        if details["service"] not in services:
            continue
        try:
            text = last_log_lines(client, cid, log_lines)
        except (DockerException, OSError):
            text = ""
        evidence = [line.strip() for line in text.splitlines() if any(key in line for key in CLEAN_SHUTDOWN_LINES)]
        clean = shutdown_verdict(details["state"], details["exit_code"], evidence)
        report.setdefault(details["service"], []).append(dict(
            name=details["name"], state=details["state"], exit_code=details["exit_code"],
            oom_killed=details["oom_killed"], clean=clean, evidence=evidence[-1:] if evidence else []))
    return report


# --- choosing a snapshot ----------------------------------------------------------------------

def snapshot_problem(directory, snapshot_id, image_present):
    """(manifest or None, problem or None) of one snapshot: every check that a full restore relies on."""
    try:
        manifest = load_manifest(directory)
    except ManifestError as exc:
        return None, "manifest: %s" % exc
    marker = read_bad_marker(directory)
    if marker:
        return manifest, "marked bad (%s)" % marker["reason"]
    damaged = verify_files(directory, manifest)
    if damaged:
        return manifest, "file copies do not match their sha256: %s" % ", ".join(damaged)
    damaged = damaged_artifacts(directory, manifest)
    if damaged:
        return manifest, "data artifacts missing or not matching their sha256: %s" % ", ".join(damaged)
    if image_present is not None:
        missing = sorted(name for name, entry in (manifest.get("services") or {}).items()
                         if not entry.get("image_id") or not image_present(entry["image_id"]))
        if missing:
            return manifest, "images no longer present locally for %s" % ", ".join(missing)
    return manifest, None


def select_snapshot(root, before=None, image_present=None):
    """Walk back from the newest snapshot to the first whose every part verifies.

    Returns dict(snapshot_id, manifest, skipped=[{id, reason}], fallback_commit: {commit, snapshot_id}
    from the newest snapshot whose manifest verifies, is not marked bad and records a commit).
    """
    chosen, chosen_manifest, skipped, fallback = None, None, [], None
    for snapshot_id in reversed(list_snapshots(root)):
        directory = os.path.join(root, snapshot_id)
        if before is not None:
            taken = snapshot_time(snapshot_id, None)
            if taken is not None and taken >= before:
                skipped.append(dict(id=snapshot_id, reason="taken at or after %s" % isoformat(before)))
                continue
        manifest, problem = snapshot_problem(directory, snapshot_id, image_present)
        if manifest is not None and before is not None:
            taken = snapshot_time(snapshot_id, manifest)
            if taken is not None and taken >= before:
                skipped.append(dict(id=snapshot_id, reason="taken at or after %s" % isoformat(before)))
                continue
        if fallback is None and manifest is not None and not is_bad(directory) and (manifest.get("git") or {}).get("commit"):
            fallback = dict(commit=manifest["git"]["commit"], snapshot_id=snapshot_id, source="snapshot")
        if problem:
            skipped.append(dict(id=snapshot_id, reason=problem))
            continue
        chosen, chosen_manifest = snapshot_id, manifest
        break
    return dict(snapshot_id=chosen, manifest=chosen_manifest, skipped=skipped, fallback_commit=fallback)


def image_checker(client):
    cache = {}

    def present(reference):
        if reference not in cache:
            try:
                cache[reference] = image_id(client, reference) is not None
            except (APIError, DockerException):
                cache[reference] = False
        return cache[reference]
    return present


# --- the data-loss window ---------------------------------------------------------------------

def newer_files(mountpoint, since_epoch, limit=200000, sample=20):
    """(count, sample paths, scanned, complete) of regular files under mountpoint modified after since_epoch."""
    count, scanned, found = 0, 0, []
    for parent, dirs, names in os.walk(mountpoint):
        dirs.sort()
        for name in sorted(names):
            scanned += 1
            if scanned > limit:
                return count, found, scanned - 1, False
            path = os.path.join(parent, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if info.st_mtime > since_epoch:
                count += 1
                if len(found) < sample:
                    found.append(os.path.relpath(path, mountpoint))
    return count, found, scanned, True


def table_window(recorded, live):
    """Per table {recorded, live, newer}: rows present now beyond what the snapshot holds (net of deletes)."""
    tables = {}
    for name in sorted(set(recorded) | set(live)):
        before = recorded.get(name)
        now = live.get(name)
        newer = None
        if now is not None:
            newer = max(0, now - (int(before) if before is not None else 0))
        tables[name] = dict(recorded=None if before is None else int(before), live=now, newer=newer)
    return tables


def window_lines(window):
    """Human lines of a data-loss window."""
    lines = []
    for name, info in sorted((window.get("databases") or {}).items()):
        if info.get("error"):
            lines.append("database %s: not measurable (%s)" % (name, info["error"]))
        else:
            newer = {t: v["newer"] for t, v in info["tables"].items() if v.get("newer")}
            lines.append("database %s: %d row(s) newer than the snapshot%s" % (
                name, info["rows_newer"], (" (%s)" % ", ".join("%s %d" % item for item in sorted(newer.items()))) if newer else ""))
    for name, info in sorted((window.get("volumes") or {}).items()):
        if info.get("error"):
            lines.append("volume %s: not measurable (%s)" % (name, info["error"]))
        else:
            lines.append("volume %s: %d file(s) changed after the snapshot%s" % (
                name, info["files_newer"], "" if info["complete"] else " (at least; scan stopped early)"))
    return lines
