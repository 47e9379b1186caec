# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the rollback orchestrator keeps on the target host: the lock, the journal, the audit log.

Layout under the backup root, next to the snapshots::

    <backup_root>/<project>/rollback.lock          who runs a rollback now (JSON)
    <backup_root>/<project>/journal.json           steps of the rollback in progress (JSON)
    <backup_root>/<project>/journal-<kind>.json    steps of a deploy or emergency run in progress
    <backup_root>/<project>/runs/<run_id>/         journal.json and report.md of each finished run
    <backup_root>/<project>/audit.jsonl            one JSON line per finished run
    <backup_root>/<project>/bad-states.jsonl       states rolled back away from (never a target again)

The lock is a file created with O_EXCL, so two runs can never both take it. A run on the same
machine as its controller is alive while the controller process (pid and start time) exists; a
holder on another machine is trusted until its lease (`expires_at`) runs out, and every journal
step renews the lease.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import socket
import time

from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    MANIFEST,
    ManifestError,
    _write_atomic,
    compact_timestamp,
    is_bad,
    isoformat,
    last_known_good,
    list_snapshots,
    load_manifest,
    project_root,
    set_last_known_good,
    utc_now,
    write_bad_marker,
)

LOCK = "rollback.lock"
JOURNAL = "journal.json"
LOCK_TTL_S = 3600  # the lease of a lock taken without a duration
RUNS = "runs"
AUDIT = "audit.jsonl"
BAD_STATES = "bad-states.jsonl"
# acquire_lock's `dead_because` for a live holder's lock taken over with break_lock.
LOCK_BROKEN = "lock broken on request"

# Cheapest first. `full` covers everything and is always the last resort.
TIERS = ("config", "images", "code", "full")
# Within one attempt, the order in which the lighter tiers are applied: the code first (it may
# bring compose files along), then the configuration files on top, then the images.
APPLY_ORDER = ("code", "config", "images")


class OrchestrateError(Exception):
    """A refused run; the message is one line."""


# --- the plan -----------------------------------------------------------------------------

def needed_tiers(differences):
    """The lighter tiers that have something to put back, given snapshot_info's `differences`."""
    differences = differences or {}
    needed = []
    if differences.get("git"):
        needed.append("code")
    if differences.get("files"):
        needed.append("config")
    if differences.get("images") or differences.get("services_added"):
        needed.append("images")
    return needed


def plan_attempts(requested, differences, escalate=True):
    """The attempts of a rollback, in order: each a list of tiers applied before one health gate.

    `auto` starts with every lighter tier that has a difference to put back (applied together,
    gated once) and escalates to `full`; an explicit tier starts there and escalates through the
    heavier tiers that have something to do, then `full`. Without escalation only the first
    attempt runs. Nothing differs: only `full` (data, restarts) can still change something.
    """
    if requested not in ("auto",) + TIERS:
        raise OrchestrateError("tier %r is not one of auto, %s" % (requested, ", ".join(TIERS)))
    needed = needed_tiers(differences)
    if requested == "auto":
        first = [tier for tier in APPLY_ORDER if tier in needed] or ["full"]
        heavier = []
    else:
        first = [requested]
        heavier = [tier for tier in TIERS[TIERS.index(requested) + 1:-1] if tier in needed]
    attempts = [first] + [[tier] for tier in heavier]
    if first != ["full"]:
        attempts.append(["full"])
    return attempts if escalate else attempts[:1]


def not_resumable(plan, snapshot_id=None, tier=None, escalate=None):
    """Why a run asking for `snapshot_id`, `tier` and `escalate` must not resume an interrupted run
    with `plan` (another snapshot, tier or escalation was asked for), or None when it may.
    What the new run leaves unsaid (None) takes the interrupted plan's."""
    asked = (("snapshot", snapshot_id, plan.get("snapshot_id")), ("tier", tier, plan.get("tier")),
             ("escalate", escalate, plan.get("escalate")))
    differ = ["%s %s, not %s" % (what, str(wanted).lower() if isinstance(wanted, bool) else wanted,
                                 str(had).lower() if isinstance(had, bool) else had)
              for what, wanted, had in asked if wanted is not None and had is not None and wanted != had]
    return "; ".join(differ) or None


# --- the lock -----------------------------------------------------------------------------

def process_start_time(pid):
    """The start time of a process in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        with open("/proc/%d/stat" % int(pid), encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def holder_alive(holder, hostname, now=None):
    """(alive, why) for the holder of a lock, seen from `hostname`."""
    now = time.time() if now is None else now
    if holder.get("host") == hostname and holder.get("pid"):
        started = process_start_time(holder["pid"])
        if started is None:
            return False, "its process %s on %s is gone" % (holder["pid"], hostname)
        if holder.get("pid_start") not in (None, started):
            return False, "its process %s on %s is gone (the pid was reused)" % (holder["pid"], hostname)
        return True, "its process %s on %s is running" % (holder["pid"], hostname)
    expires = holder.get("expires_at_epoch")
    if expires is not None and expires < now:
        return False, "its lease expired %d s ago" % int(now - expires)
    return True, "its lease runs until %s" % holder.get("expires_at", "?")


def same_holder(one, other):
    keys = ("host", "pid", "pid_start")
    return all(one.get(key) == other.get(key) for key in keys)


def describe_holder(holder):
    return "host %s, pid %s, user %s, since %s, reason: %s" % (
        holder.get("host", "?"), holder.get("pid", "?"), holder.get("user") or "?",
        holder.get("started_at", "?"), holder.get("reason") or "-")


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _lease(holder, ttl_s, now):
    holder = dict(holder)
    # Kept, so that a renewal without a duration of its own renews for as long as the lock was taken.
    holder["ttl_s"] = ttl_s
    holder["expires_at_epoch"] = now + ttl_s
    holder["expires_at"] = isoformat(_utc_from_epoch(now + ttl_s))
    return holder


def _utc_from_epoch(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)


def acquire_lock(root, holder, ttl_s, hostname, break_lock=False, check_mode=False):
    """Take the project's lock. Returns (state, previous) with state one of
    'taken', 'reentered' (this run already holds it), 'taken_over' (the holder was dead or
    `break_lock`). Raises OrchestrateError naming the holder when it is alive.
    """
    path = os.path.join(root, LOCK)
    now = time.time()
    mine = _lease(dict(holder, started_at=isoformat(utc_now())), ttl_s, now)
    for _attempt in range(3):
        current = read_json(path)
        if current is not None:
            if same_holder(current, holder):
                if not check_mode:
                    _write_atomic(path, json.dumps(_lease(current, ttl_s, now), indent=2) + "\n", mode=0o640)
                return "reentered", current
            alive, why = holder_alive(current, hostname, now)
            if alive and not break_lock:
                raise OrchestrateError(
                    "another rollback holds the lock of this project (%s; %s); it was refused, "
                    "nothing changed" % (describe_holder(current), why))
            if check_mode:
                return "taken_over", current
            # Replace the dead holder's lock by a rename, so a racing run sees one or the other.
            _write_atomic(path, json.dumps(mine, indent=2) + "\n", mode=0o640)
            again = read_json(path) or {}
            if same_holder(again, holder):
                return "taken_over", dict(current, dead_because=why if not alive else LOCK_BROKEN)
            continue
        if check_mode:
            return "taken", None
        os.makedirs(root, mode=0o750, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(mine, indent=2) + "\n")
        return "taken", None
    raise OrchestrateError("could not take the lock %s: it changed hands three times while trying" % path)


def refuse_if_locked(backup_root, project_name, holder, hostname):
    """Stop a tier run on its own (a tier playbook, a tier job template) while another run holds
    the project's lock: a rollback or a deploy in progress, or a live holder elsewhere.

    Raises OrchestrateError naming the holder. Returns the lock when this run holds it (the
    orchestrator or a deploy including the tier), None when nobody alive holds it.
    """
    current = read_json(os.path.join(project_root(backup_root, project_name), LOCK))
    if current is None:
        return None
    # An unreadable lock ({}) names nobody: held, as acquire_lock treats it.
    if holder and same_holder(current, holder):
        return current
    alive, why = holder_alive(current, hostname)
    if not alive:
        return None
    raise OrchestrateError(
        "nothing changed: another run holds the lock of project %s (%s; %s); wait for it to finish, "
        "or use playbooks/rollback.yml, which resumes or takes over a dead run's lock"
        % (project_name, describe_holder(current), why))


# The options of the tier modules that refuse while another run holds the lock (doc fragment lock).
HOLDER_ARGUMENT_SPEC = dict(holder=dict(type="dict"), break_lock=dict(type="bool", default=False),
                            reason=dict(type="str", default=""))
# How long a holder on another machine trusts the lock a tier module on its own holds while it works.
MODULE_LOCK_TTL_S = 3600
# The tier a module on its own applies, for its audit line (the data modules serve the full tier
# and playbooks/restore_database.yml: no tier of their own).
MODULE_TIERS = {"config_restore": "config", "compose_image_restore": "images", "git_revert": "code"}


def lock_for_module(module, backup_root, project_name, what, refuse_interrupted=None, audit=True):
    """The guard of a tier module (one with HOLDER_ARGUMENT_SPEC), before it changes anything.

    While another live run holds the project's lock, fails the module with one line naming the
    holder, in check mode too, unless the module's `break_lock` is set: then the lock is taken
    over from it (a warning and the audit line name it). When this run holds it (the
    orchestrator, a deploy including the tier), goes on. Otherwise (no lock, or a dead run's)
    takes it for this run with the reason "`what` on its own" (and the module's `reason`, when
    given), not in check mode, writes the run's line in the project's audit log when
    it changed something, and releases the lock when the module's process ends: another run, or
    another tier run on its own, waits for this one. An interrupted run's journal stays: the
    orchestrator still resumes it. With `refuse_interrupted` (why it matters to this module), a
    run on its own is refused while such a journal is there, in check mode too. Without `audit`
    (a snapshot, which changes no stack), the lock is held and released and no line is written.
    Returns the lock the module works under, or None.
    """
    holder = module.params["holder"]
    break_lock = module.params.get("break_lock")
    hostname = socket.gethostname()
    try:
        # An unsafe project name (one given as an option) is bad input: one line, nothing done.
        root = project_root(backup_root, project_name)
        try:
            current = refuse_if_locked(backup_root, project_name, holder, hostname)
        except OrchestrateError:
            if not break_lock or not holder:
                raise
            current = None  # a live run's lock, taken over below on request
        if current is not None:
            return current
        if refuse_interrupted:
            refuse_if_interrupted(root, refuse_interrupted)
        if not holder or module.check_mode or not os.path.isdir(root):
            return None
        reason = (module.params.get("reason") or "").strip()
        mine = dict(holder, reason="%s on its own%s" % (what, ": " + reason if reason else ""))
        state, previous = acquire_lock(root, mine, MODULE_LOCK_TTL_S, hostname, break_lock=break_lock)
    except (OrchestrateError, ManifestError) as exc:
        module.fail_json(msg=str(exc), project_name=project_name)
    taken_from = None
    if state == "taken_over" and previous and previous.get("dead_because") == LOCK_BROKEN:
        taken_from = describe_holder(previous)
        module.warn("took the project's lock over from a live run on request (break_lock): %s" % taken_from)
    if audit:
        _RunOnItsOwn(module, root, mine, project_name, what, hostname, taken_from)
    else:
        atexit.register(release_lock, root, mine)
    return mine


class _RunOnItsOwn:
    """The end of a tier module's run on its own: when it changed something, one line in the
    project's audit log (who, when, what it did, the result), as every rollback, deploy and
    emergency run leaves; then the lock goes.

    The line is written as the module returns (exit_json or fail_json, wrapped here, so no module
    has to remember it on each of its ways out): for a success that changed something, for a
    failure after its first change, and for a run that broke a live run's lock. A run that
    changed nothing (nothing to do, bad input, a failed verification) leaves no line, as the
    orchestrator's refusals leave none. A line that cannot be written becomes a warning of the
    result. The lock is released when the process ends (exit_json and fail_json end it with
    sys.exit), even after a crash, which is recorded then as a failure without a result: what it
    changed is not known.
    """

    def __init__(self, module, root, holder, project_name, what, hostname, taken_from=None):
        self.root, self.holder, self.project_name, self.what, self.hostname = root, holder, project_name, what, hostname
        self.taken_from = taken_from
        self.audit_path = os.path.join(root, AUDIT)
        self.params = module.params
        self.started = time.time()
        self.written = False
        exit_json, fail_json = module.exit_json, module.fail_json

        def exit_with_record(**result):
            self.record(module, "success", result)
            exit_json(**result)

        def fail_with_record(msg, **result):
            self.record(module, "failed", dict(result, msg=msg))
            fail_json(msg=msg, **result)

        module.exit_json, module.fail_json = exit_with_record, fail_with_record
        atexit.register(self.end)

    def line(self, result, outcome, changed=True):
        message = outcome.get("msg") or "%s: done" % self.what
        details = {"controller": self.holder.get("host"), "changed": changed, "actions": outcome.get("actions") or [],
                   "tiers": [MODULE_TIERS[self.what]] if self.what in MODULE_TIERS else [],
                   "lock_taken_over_from": self.taken_from,
                   "to": outcome.get("snapshot_id") or self.params.get("snapshot_id") or outcome.get("target")}
        return audit_line(self.project_name, "tier", self.what, result, self.started, self.hostname,
                          self.holder.get("user"), self.holder.get("reason"), message, details)

    def write(self, line):
        """Append `line` once per run; returns the OSError that stopped it, or None."""
        self.written = True
        try:
            append_line(self.audit_path, line)
        except OSError as exc:
            return exc
        return None

    def record(self, module, result, outcome):
        if self.written:
            return
        if not outcome.get("changed") and not self.taken_from:
            self.written = True
            return
        error = self.write(self.line(result, outcome))
        if error:
            module.warn("the audit line of this run could not be written to %s: %s" % (self.audit_path, error))

    def end(self):
        if not self.written:
            # Nowhere left to report a failure to write it: the process is ending.
            self.write(self.line("failed", {"msg": "%s ended without a result" % self.what}, changed=None))
        release_lock(self.root, self.holder)


def check_lock(root, holder):
    current = read_json(os.path.join(root, LOCK))
    if current is None or not same_holder(current, holder):
        raise OrchestrateError(
            "this run no longer holds the project's lock (%s); stop and look before going on"
            % (describe_holder(current) if current else "nobody holds it"))
    return current


def renew_lock(root, holder, ttl_s=None):
    """Extend the lease by `ttl_s`, by default as long as the lock was taken for."""
    current = check_lock(root, holder)
    ttl_s = ttl_s or current.get("ttl_s") or LOCK_TTL_S
    _write_atomic(os.path.join(root, LOCK), json.dumps(_lease(current, ttl_s, time.time()), indent=2) + "\n", mode=0o640)


def release_lock(root, holder):
    path = os.path.join(root, LOCK)
    current = read_json(path)
    if current is not None and same_holder(current, holder):
        os.unlink(path)
        return True
    return False


# --- the journal --------------------------------------------------------------------------

def new_journal(kind, reason, user, plan, holder, started_epoch=None):
    """A new run's journal; `started_epoch` backdates it to when the run really began (its first task)."""
    started_epoch = time.time() if started_epoch is None else float(started_epoch)
    moment = _utc_from_epoch(started_epoch)
    return {
        "run_id": compact_timestamp(moment),
        "kind": kind,
        "started_at": isoformat(moment),
        "started_epoch": started_epoch,
        "reason": reason,
        "user": user,
        "controller": holder.get("host"),
        "plan": plan or {},
        "steps": [],
        "resumed": [],
    }


KINDS = ("rollback", "deploy", "emergency")


def journal_path(root, kind="rollback"):
    """Each kind of run has its own journal: a deploy that rolls back holds both at once."""
    return os.path.join(root, JOURNAL if kind == "rollback" else "journal-%s.json" % kind)


def run_snapshots(root):
    """Snapshot ids that runs in progress or interrupted still need: the target of each journal's
    plan and the snapshots its steps recorded (a deploy's "before" snapshot, a full tier's safety
    snapshot). Retention keeps them, so a resumed run finds what it started from."""
    needed = set()
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        if not (name == JOURNAL or (name.startswith("journal-") and name.endswith(".json"))):
            continue
        journal = read_json(os.path.join(root, name))
        if not isinstance(journal, dict):
            continue
        plan = journal.get("plan") if isinstance(journal.get("plan"), dict) else {}
        records = [plan] + [record.get("data") for record in journal.get("steps") or [] if isinstance(record, dict)]
        # snapshot_id, and the full tier's safety_snapshot_id: the only copy of the data it replaces.
        for data in records:
            if isinstance(data, dict):
                needed.update(value for key, value in data.items() if key.endswith("snapshot_id"))
    return sorted(snapshot_id for snapshot_id in needed if isinstance(snapshot_id, str) and snapshot_id)


def interrupted_runs(root):
    """The journals in `root` of runs not finished (a finished run archives its own): an interrupted
    run when nobody alive holds the lock, as [{kind, run_id, started_at}]."""
    runs = []
    for kind in KINDS:
        journal = read_json(journal_path(root, kind))
        if journal is not None:
            runs.append({"kind": kind, "run_id": journal.get("run_id") or "unknown", "started_at": journal.get("started_at")})
    return runs


def refuse_if_interrupted(root, why):
    """Raise OrchestrateError, one line, while the journal of an interrupted run is in `root`."""
    runs = interrupted_runs(root)
    if runs:
        kinds = " and ".join(run["kind"] for run in runs)
        raise OrchestrateError(
            "nothing changed: %s (%s); %s. Resume it with playbooks/rollback.yml (a deploy with "
            "playbooks/deploy.yml), which also closes a run of another kind, then try again"
            % ("an interrupted %s run has not finished" % kinds if len(runs) == 1 else
               "interrupted %s runs have not finished" % kinds,
               "; ".join("run %s, started %s" % (run["run_id"], run["started_at"] or "at an unknown time") for run in runs),
               why))


def load_journal(root, kind="rollback"):
    path = journal_path(root, kind)
    journal = read_json(path)
    if journal == {}:
        raise OrchestrateError("the journal %s of an interrupted run is unreadable; move it away after looking at it" % path)
    return journal


def save_journal(root, journal):
    _write_atomic(journal_path(root, journal.get("kind", "rollback")), json.dumps(journal, indent=2, sort_keys=True) + "\n",
                  mode=0o640)


def step_states(journal):
    """{step: {status, data, at}} with the latest record of each step."""
    states = {}
    for record in journal.get("steps", []):
        states[record["step"]] = record
    return states


def done_steps(journal):
    return {name: record.get("data") or {} for name, record in step_states(journal).items()
            if record.get("status") == "done"}


def record_step(journal, step, status, data=None):
    record = {"step": step, "status": status, "at": isoformat(utc_now()), "epoch": time.time()}
    if data:
        record["data"] = data
    journal.setdefault("steps", []).append(record)
    return record


def step_durations(journal):
    """Seconds from each step's first 'started' to its last 'done'/'failed' record."""
    started, ended = {}, {}
    for record in journal.get("steps", []):
        if record["status"] == "started":
            started.setdefault(record["step"], record["epoch"])
        elif record["status"] in ("done", "failed"):
            ended[record["step"]] = record["epoch"]
    return {name: round(ended[name] - started[name], 3) for name in ended if name in started}


# --- the end of a run: audit line, report, bad states -------------------------------------

def audit_record(journal, result, summary, hostname, finished):
    durations = step_durations(journal)
    return {
        "run_id": journal["run_id"],
        "kind": journal.get("kind", "rollback"),
        "host": hostname,
        "controller": journal.get("controller"),
        "user": journal.get("user"),
        "reason": journal.get("reason"),
        "started_at": journal["started_at"],
        "finished_at": isoformat(finished),
        "duration_s": round(time.time() - journal.get("started_epoch", time.time()), 3),
        "resumed": len(journal.get("resumed", [])),
        "result": result,
        "from": summary.get("from"),
        "to": summary.get("to"),
        "tiers": summary.get("tiers", []),
        "escalations": summary.get("escalations", 0),
        "healthy": summary.get("healthy"),
        "step_durations_s": durations,
        "message": summary.get("message"),
        "details": summary.get("details") or {},
    }


def audit_line(project, kind, action, result, started_epoch, hostname, user, reason, message, details):
    """One line of the audit log, with the keys the orchestrator's lines have."""
    finished = utc_now()
    started = datetime.datetime.fromtimestamp(started_epoch, datetime.timezone.utc)
    record = {
        "run_id": compact_timestamp(started),
        "kind": kind,
        "action": action,
        "project": project,
        "host": hostname,
        "controller": None,
        "user": user,
        "reason": reason,
        "started_at": isoformat(started),
        "finished_at": isoformat(finished),
        "duration_s": round(time.time() - started_epoch, 3),
        "resumed": 0,
        "result": result,
        "from": None,
        "to": None,
        "tiers": [],
        "escalations": 0,
        "healthy": None,
        "step_durations_s": {},
        "message": message,
    }
    record.update(details or {})
    return record


def append_line(path, record):
    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def render_report(project, record, journal):
    """The human report of one run, in markdown."""
    lines = [
        "# %s %s of %s: %s" % (record["kind"].capitalize(), record["run_id"], project, record["result"].upper()),
        "",
        "| | |",
        "|---|---|",
        "| host | %s |" % record["host"],
        "| started by | %s from %s |" % (record.get("user") or "?", record.get("controller") or "?"),
        "| reason | %s |" % (record.get("reason") or "-"),
        "| started / finished | %s / %s |" % (record["started_at"], record["finished_at"]),
        "| duration | %.1f s |" % record["duration_s"],
        "| tiers | %s |" % (", ".join(record.get("tiers") or []) or "-"),
        "| escalations | %s |" % record.get("escalations", 0),
        "| rolled back to | %s |" % _short(record.get("to")),
        "| rolled back from | %s |" % _short(record.get("from")),
        "| healthy at the end | %s |" % {True: "yes", False: "NO", None: "not checked"}.get(record.get("healthy"), "?"),
        "",
    ]
    if record.get("message"):
        lines += ["**%s**" % record["message"], ""]
    if journal.get("resumed"):
        lines += ["Resumed after an interruption at: %s" % ", ".join(journal["resumed"]), ""]
    lines += ["## Steps", "", "| step | status | at | seconds |", "|---|---|---|---|"]
    durations = record.get("step_durations_s") or {}
    for name, state in step_states(journal).items():
        lines.append("| %s | %s | %s | %s |" % (name, state["status"], state["at"],
                                                "%.2f" % durations[name] if name in durations else ""))
    lines.append("")
    return "\n".join(lines)


def _short(value):
    if not value:
        return "-"
    if isinstance(value, dict):
        parts = []
        if value.get("snapshot_id"):
            parts.append("snapshot %s" % value["snapshot_id"])
        if value.get("commit"):
            parts.append("commit %s" % str(value["commit"])[:12])
        for name, image in sorted((value.get("images") or {}).items()):
            parts.append("%s %s" % (name, str(image)[7:19] if str(image).startswith("sha256:") else str(image)[:12]))
        return ", ".join(parts) or "-"
    return str(value)


def archive_run(root, journal, report):
    """Move the journal of a finished run into runs/<run_id>/ with its report."""
    kind = journal.get("kind", "rollback")
    directory = os.path.join(root, RUNS, journal["run_id"] if kind == "rollback" else "%s-%s" % (journal["run_id"], kind))
    os.makedirs(directory, mode=0o750, exist_ok=True)
    _write_atomic(os.path.join(directory, JOURNAL), json.dumps(journal, indent=2, sort_keys=True) + "\n")
    _write_atomic(os.path.join(directory, "report.md"), report)
    try:
        os.unlink(journal_path(root, journal.get("kind", "rollback")))
    except FileNotFoundError:
        pass
    return directory


def state_matches(manifest, state):
    """Whether a snapshot records exactly the given state (service image IDs, and commit when given)."""
    images = state.get("images") or {}
    if not images:
        return False
    recorded = {name: entry.get("image_id") for name, entry in (manifest.get("services") or {}).items()}
    if any(recorded.get(name) != image for name, image in images.items()):
        return False
    commit = state.get("commit")
    return not commit or (manifest.get("git") or {}).get("commit") == commit


def promote_target(root, snapshot_id):
    """After a successful rollback, point last-known-good at the snapshot it restored and gated.

    A rollback to an older snapshot marks the newer state bad; a pointer left on it would make the
    next plain rollback refuse, and keep a bad snapshot protected from retention instead of the one
    that runs. A target that is gone or marked bad is never pointed at. Returns the pointer after."""
    directory = os.path.join(root, snapshot_id or "")
    if not snapshot_id or is_bad(directory) or not os.path.isfile(os.path.join(directory, MANIFEST)):
        return last_known_good(root)
    if last_known_good(root) != snapshot_id:
        set_last_known_good(root, snapshot_id)
    return snapshot_id


def _recorded_state_matches(directory, state):
    try:
        return state_matches(load_manifest(directory), state)
    except Exception:  # a damaged snapshot is no target anyway  # pylint: disable=broad-except
        return False


def mark_bad_state(root, state, reason, keep=()):
    """Remember a state (images and commit) rolled back away from, and mark bad every snapshot that
    records it (except those in `keep`: the snapshot just rolled back to is never marked).

    When a snapshot in `keep` records that same state, the images and commit were not what was bad
    (only configuration files or data differed): nothing is remembered or marked, else every
    snapshot of the good images and commit would be. Returns the snapshots marked."""
    if any(_recorded_state_matches(os.path.join(root, snapshot_id), state) for snapshot_id in keep if snapshot_id):
        return []
    append_line(os.path.join(root, BAD_STATES), dict(state, reason=reason, at=isoformat(utc_now())))
    marked = []
    for snapshot_id in list_snapshots(root):
        directory = os.path.join(root, snapshot_id)
        if snapshot_id in keep or is_bad(directory):
            continue
        if _recorded_state_matches(directory, state):
            write_bad_marker(directory, reason, utc_now())
            marked.append(snapshot_id)
    return marked
