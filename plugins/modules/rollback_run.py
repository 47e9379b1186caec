#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollback_run
short_description: Lock, journal and audit log of a rollback or deploy run on the target host
version_added: 0.2.0
description:
  - O(state=begin) with O(project_dir) first assesses - verifies the target snapshot (O(snapshot_id), by default the
    last known good; manifest and file checksums, bad marker) and compares it with what runs (configuration files,
    images, git commit), returned as RV(target) - so that one module run does what a rollback needs before it
    changes anything.
  - With O(apply_first=true), when the plan's first attempt is the image tier alone, the same module run then
    applies it the way M(lastgood.rollback.compose_image_restore) does with recreation - every image verified
    before the first tag moves, only the services that run another image recreated, without waiting (the
    attempt's gate does the waiting) - and records C(<first_step>:images) in the journal. An image-only
    rollback then needs no separate module run between the lock and the gate.
  - O(state=begin) takes the project's lock (C(<backup_root>/<project>/rollback.lock)). A lock held by a live
    run refuses this one at once, naming the holder's host, pid, user, start time and reason. A lock whose
    holder is dead (same machine, process gone) or whose lease ran out (another machine) is taken over.
    When the journal of an interrupted run exists, the run resumes it and RV(done) says which steps need
    not run again.
  - O(state=step) records a step (C(started), C(done), C(failed), C(skipped)) with its data in the journal and
    renews the lock's lease.
  - O(state=finish) appends one JSON line to the audit log (who, when, from, to, tiers, result, durations),
    writes a markdown report, archives the journal under C(runs/<run_id>/), optionally writes Prometheus
    textfile metrics and marks the state rolled back away from as bad, then releases the lock.
  - O(state=status) only reads the lock and journal.
  - O(state=record) counts a run kept without a journal in the textfile metrics of O(metrics_dir) - a tier
    playbook on its own (C(rollback_config.yml), C(rollback_images.yml), C(rollback_code.yml)), whose module
    held the lock and wrote the audit line itself. It needs O(tier), O(result), O(started_epoch) and
    O(metrics_dir), and touches neither the lock nor the journal.
  - The action plugin fills O(holder) on the controller (host name, the pid and start time of the
    ansible-playbook process, user), so a lock names the run that holds it.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.snapshots
  - lastgood.rollback.project.LOOKUP
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - O(state=begin) reports whether the lock could be taken and what would be resumed; nothing is written.
      - With O(apply_first=true), the image tier's plan (tags to move, services to recreate) is returned in RV(applied).
  diff_mode:
    support: partial
    details:
      - With O(apply_first=true) and the image tier applied, the image ID each service's reference names before and after.
options:
  state:
    description: What to do.
    type: str
    choices: [begin, step, finish, status, record]
    required: true
  snapshot_id:
    description: With O(state=begin) and O(project_dir), the target snapshot. Defaults to the last known good one.
    type: str
  started_epoch:
    description:
      - With O(state=begin), when the run really began (Unix time of its first task); defaults to now.
      - With O(state=record), when the tier run began; its duration is counted from it.
    type: float
  first_step:
    description: With O(state=begin), a step recorded as C(started) in a new journal (saves a module run).
    type: str
  apply_first:
    description:
      - With O(state=begin), O(project_dir) and O(first_step), apply the first attempt in this run when it is the
        image tier alone and the run is new (a resumed run leaves its steps to the caller). See RV(applied).
      - A failure of the tier fails the module with the tier's message; the lock stays held and the journal records
        the step as C(failed), so the caller can close the run with O(state=finish).
    type: bool
    default: false
  steps:
    description:
      - With O(state=step) or O(state=finish), several records (C(step), C(status), C(data)) written at once; with
        O(state=finish) they are written before the run is closed.
    type: list
    elements: dict
  kind:
    description: What kind of run this is, for the audit log and the metrics.
    type: str
    choices: [rollback, deploy, emergency]
    default: rollback
  holder:
    description:
      - Who runs this (C(host), C(pid), C(pid_start), C(user)). Set by the action plugin from the controller;
        give it only to simulate another run.
    type: dict
  reason:
    description: Why this run happens (stored in the lock, the journal and the audit log).
    type: str
    default: ""
  user:
    description: Who started the run (for example the AWX user); defaults to the controller user.
    type: str
  lock_ttl_s:
    description:
      - Lease of the lock in seconds, renewed by every step. Only matters when the holder runs on another
        machine, whose process cannot be checked from here.
      - Defaults to 3600 when the lock is taken; a step without it renews the lease for the time the lock was
        taken for.
    type: int
  break_lock:
    description: Take the lock even from a live holder. Only when you are sure the other run is gone.
    type: bool
    default: false
  plan:
    description:
      - With O(state=begin), the plan of a new run, stored in the journal (a resumed run keeps its own).
      - With O(tier), C(attempts) is added to it (see RV(journal)).
    type: dict
  tier:
    description:
      - With O(state=begin), the tier asked for; the module plans the attempts from it and O(differences)
        (C(auto) starts with every lighter tier that has something to put back and escalates to C(full); an
        explicit tier escalates through the heavier tiers that have something to do, then C(full)).
      - With O(state=record), the tier that ran (not C(auto)).
    type: str
    choices: [auto, config, images, code, full]
  differences:
    description: With O(tier), what differs between the live project and the snapshot (from M(lastgood.rollback.snapshot_info)).
    type: dict
  escalate:
    description: With O(tier), plan the escalation attempts too; without it only the first attempt.
    type: bool
    default: true
  step:
    description: With O(state=step), the step's name. Every O(state=step) and O(state=finish) acts on the journal of O(kind).
    type: str
  status:
    description: With O(state=step), what happened to the step.
    type: str
    choices: [started, done, failed, skipped]
    default: done
  data:
    description: With O(state=step), data to keep with the step (returned by RV(done) when the run resumes).
    type: dict
  result:
    description: With O(state=finish) or O(state=record), how the run ended.
    type: str
    choices: [success, failed, aborted, refused, planned]
  summary:
    description:
      - With O(state=finish), C(from), C(to), C(tiers), C(escalations), C(healthy), C(message) and
        C(snapshot_age_s) for the audit line, the report and the metrics.
    type: dict
  bad_state:
    description:
      - With O(state=finish) and O(result=success), the state rolled back away from (C(images) per service,
        C(commit)); it is remembered and every snapshot recording exactly it is marked bad. Not when the
        snapshot rolled back to records the same state - then only configuration files or data were bad.
    type: dict
  audit_log:
    description: The audit log (JSON lines). Defaults to C(<backup_root>/<project>/audit.jsonl).
    type: path
  metrics_dir:
    description:
      - A node_exporter textfile collector directory; with O(state=finish) or O(state=record) the run's metrics
        are written there as C(lastgood_<project>.prom). Empty writes none (O(state=record) needs it).
    type: path
  release:
    description: With O(state=finish), release the lock (a run nested in another one leaves it to the outer run).
    type: bool
    default: true
  promote:
    description:
      - With O(state=finish), O(kind=rollback) and O(result=success), point last-known-good at the snapshot the run
        restored and gated (RV(last_known_good)).
      - V(false) for a caller that goes on changing the stack and takes its own snapshot at the end (the
        security-breach procedure restores a snapshot that holds the leaked secrets, then patches and rotates).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Take the lock; resume an interrupted run
  lastgood.rollback.rollback_run:
    state: begin
    project_name: shop
    reason: "error rate above 5% after release 4.2"
    plan:
      attempts: [[images], [full]]
  register: run

- name: Record a step
  lastgood.rollback.rollback_run:
    state: step
    project_name: shop
    step: "attempt-1:images"
    status: done
    data:
      healthy: true

- name: Write the audit line and the report, release the lock
  lastgood.rollback.rollback_run:
    state: finish
    project_name: shop
    result: success
    summary:
      tiers: [images]
      to: {snapshot_id: "{{ run.journal.plan.snapshot_id }}"}
      healthy: true

- name: Count a configuration rollback run on its own in the textfile metrics
  lastgood.rollback.rollback_run:
    state: record
    project_name: shop
    tier: config
    result: success
    started_epoch: "{{ started_at }}"
    metrics_dir: /var/lib/node_exporter/textfile_collector
"""

RETURN = r"""
run_id:
  description: Id of the run (the UTC time it began); a resumed run keeps the id of the interrupted one.
  returned: success
  type: str
  sample: 20261130T120102Z
target:
  description:
    - With O(state=begin) and O(project_dir), the verified target snapshot - C(snapshot_id), C(snapshot_dir),
      C(project_name), C(created_at), C(git) (the recorded commit) - and C(differences) from what runs now
      (C(files), C(images), C(services_added), C(services_removed), C(git), C(any), C(summary), C(live)), as
      M(lastgood.rollback.snapshot_info) returns them.
  returned: when O(state=begin) and O(project_dir) is given
  type: dict
lock:
  description: C(taken), C(reentered) (this run already held it), C(taken_over) (the holder was dead) or C(released).
  returned: success
  type: str
took_over:
  description: The dead holder whose lock was taken over, with C(dead_because), or null.
  returned: when O(state=begin)
  type: dict
resumed:
  description: Whether an interrupted run's journal was picked up.
  returned: when O(state=begin)
  type: bool
journal:
  description: The journal (C(run_id), C(plan), C(steps), C(resumed), ...).
  returned: success
  type: dict
done:
  description: Steps already done in this run, with the data they recorded.
  returned: success
  type: dict
applied:
  description:
    - With O(apply_first=true), the tier applied in this run - C(tier), C(step), C(changed),
      C(services_changed) (the recreated services), C(summary_lines) (what was done) and C(services) (per
      service what M(lastgood.rollback.compose_image_restore) returns) - or null when the first attempt was
      left to the caller.
  returned: when O(state=begin)
  type: dict
holder:
  description: Who holds the lock now (O(state=status)), or null.
  returned: when O(state=status)
  type: dict
audit:
  description: The audit line written (O(state=finish)).
  returned: when O(state=finish)
  type: dict
report:
  description: The markdown report (O(state=finish)).
  returned: when O(state=finish)
  type: str
report_path:
  description: Where the report was written.
  returned: when O(state=finish) and not in check mode
  type: str
metrics_path:
  description: The textfile the run's metrics were written to (null when they could not be).
  returned: when O(metrics_dir) is set, O(state=finish) or O(state=record), and not in check mode
  type: str
marked_bad:
  description: Snapshots marked bad because they record the state rolled back away from.
  returned: when O(state=finish)
  type: list
  elements: str
last_known_good:
  description:
    - The snapshot last-known-good points at after a successful rollback (O(kind=rollback)). The snapshot the run
      restored and gated becomes last known good, so a rollback to an older snapshot does not leave the pointer on
      the state it just marked bad.
  returned: when O(state=finish), O(kind=rollback), O(result=success) and O(promote), not in check mode
  type: str
  sample: 20261130T101500Z
"""

import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils import _metrics
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_LOOKUP_ARGUMENT_SPEC,
    PROJECT_LOOKUP_REQUIRED_ONE_OF,
    load_project,
    resolve_project_name,
)
from ansible_collections.lastgood.rollback.plugins.module_utils import _orchestrate as orch
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    ManifestError,
    load_verified_snapshot,
    project_root,
    utc_now,
)


class Assessment:
    """The verified target snapshot, what differs from it now (RV(target)), and what a tier applied
    in the same run needs (the project, the Docker client, the manifest)."""

    def __init__(self, module):
        # The Docker SDK is imported only by a run that assesses: step and finish, which only
        # write the run's records, start faster without it.
        from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client
        from ansible_collections.lastgood.rollback.plugins.module_utils._state import compare_with_manifest

        params = module.params
        self.project = load_project(module, params)
        try:
            snapshot_id, directory, self.manifest = load_verified_snapshot(
                params["backup_root"], params["project_name"] or self.project.name, params["snapshot_id"])
        except ManifestError as exc:
            module.fail_json(msg=str(exc))
        self.client = docker_client(module)
        differences = compare_with_manifest(module, self.project, self.client, self.manifest)
        self.target = dict(snapshot_id=snapshot_id, snapshot_dir=directory,
                           project_name=params["project_name"] or self.project.name,
                           created_at=self.manifest.get("created_at"), git=self.manifest.get("git"),
                           differences=differences)

    def apply_images(self, module, root, journal):
        """The image tier as the run's first attempt (lock held, journal open); what it did."""
        from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError
        from ansible_collections.lastgood.rollback.plugins.module_utils._images import restore_images

        name = "%s:images" % module.params["first_step"]
        try:
            result = restore_images(self.client, self.project, self.manifest.get("services") or {}, recreate=True,
                                    wait=False, check_mode=module.check_mode)
        except StepError as exc:
            orch.record_step(journal, name, "failed", {"msg": exc.msg})
            if not module.check_mode:
                orch.save_journal(root, journal)
            details = dict(exc.result)
            details.update(run_id=journal["run_id"], journal=journal, done=orch.done_steps(journal), lock="held",
                           target=self.target, applied=dict(tier="images", step=name, failed=True))
            module.fail_json(msg=exc.msg, **details)
        data = dict(changed=result["changed"], services_changed=result["recreate"], summary_lines=result["actions"])
        orch.record_step(journal, name, "done", data)
        if not module.check_mode:
            orch.save_journal(root, journal)
        return dict(data, tier="images", step=name, services=result["services"], diff=result["diff"])


def begin(module, root, holder, hostname, assessment=None):
    target = assessment.target if assessment else None
    params = module.params
    if target and params["differences"] is None:
        params["differences"] = target["differences"]
    lock_state, previous = orch.acquire_lock(root, holder, params["lock_ttl_s"] or orch.LOCK_TTL_S, hostname,
                                             break_lock=params["break_lock"], check_mode=module.check_mode)
    if lock_state != "reentered" and not module.check_mode:
        # Runs of other kinds interrupted under a lock this run took over (a deploy killed half
        # way, and now a rollback): closed as interrupted, never resumed by a run of another kind.
        for kind in orch.KINDS:
            stale = orch.load_journal(root, kind) if kind != params["kind"] else None
            if stale is not None:
                close_interrupted(module, root, stale, hostname)
    journal = orch.load_journal(root, params["kind"])
    if journal is not None and lock_state != "reentered":
        # The same command run again resumes; one asking for another snapshot, tier or escalation
        # closes the interrupted run and starts its own (never replays an old plan under a new name).
        why = orch.not_resumable(journal.get("plan") or {}, target["snapshot_id"] if target else None,
                                 params["tier"], params["escalate"] if params["tier"] else None)
        if why:
            if not module.check_mode:
                close_interrupted(module, root, journal, hostname, why)
            journal = None
    resumed = False
    applied = None
    if journal is None:
        plan = dict(params["plan"] or {})
        if params["tier"]:
            plan.update(tier=params["tier"], escalate=params["escalate"],
                        attempts=orch.plan_attempts(params["tier"], params["differences"], params["escalate"]))
        if target:
            plan.setdefault("snapshot_id", target["snapshot_id"])
            plan.setdefault("from", target["differences"]["live"])
            plan.setdefault("differences", target["differences"]["summary"])
            plan.setdefault("differed", target["differences"]["any"])
        journal = orch.new_journal(params["kind"], params["reason"], params["user"] or holder.get("user"), plan, holder,
                                   started_epoch=params["started_epoch"])
        if params["first_step"]:
            orch.record_step(journal, params["first_step"], "started")
        if not module.check_mode:
            orch.save_journal(root, journal)
        attempts = journal.get("plan", {}).get("attempts") or []
        if params["apply_first"] and assessment and params["first_step"] and attempts and attempts[0] == ["images"]:
            applied = assessment.apply_images(module, root, journal)
    elif lock_state != "reentered":
        resumed = True
        last = journal["steps"][-1]["step"] if journal.get("steps") else "begin"
        journal.setdefault("resumed", []).append(last)
        if not module.check_mode:
            orch.save_journal(root, journal)
    extra = dict(target=target) if target else {}
    changed = (lock_state != "reentered" and not module.check_mode) or bool(applied and applied["changed"])
    if applied:
        extra["diff"] = applied.pop("diff")
    return dict(extra, changed=changed, lock=lock_state, took_over=previous if lock_state == "taken_over" else None,
                resumed=resumed, applied=applied, run_id=journal["run_id"], journal=journal,
                done=orch.done_steps(journal))


def close_interrupted(module, root, journal, hostname, why=None):
    message = "interrupted; closed by a later %s run%s" % (module.params["kind"], " (%s)" % why if why else "")
    record = orch.audit_record(journal, "interrupted", {"message": message}, hostname, utc_now())
    orch.append_line(audit_path(module, root), record)
    orch.archive_run(root, journal, orch.render_report(module.params["project_name"], record, journal))


def audit_path(module, root):
    return module.params["audit_log"] or os.path.join(root, orch.AUDIT)


def step(module, root, holder):
    params = module.params
    if not params["step"] and not params["steps"]:
        raise orch.OrchestrateError("state=step needs step or steps")
    if module.check_mode:
        return dict(changed=False, journal=orch.load_journal(root, params["kind"]) or {}, done={})
    orch.check_lock(root, holder)
    journal = orch.load_journal(root, params["kind"])
    if journal is None:
        raise orch.OrchestrateError("no %s in progress for this project: begin one first" % params["kind"])
    record_steps(journal, params)
    orch.save_journal(root, journal)
    orch.renew_lock(root, holder, params["lock_ttl_s"])
    return dict(changed=True, lock="held", run_id=journal["run_id"], journal=journal, done=orch.done_steps(journal))


def record_steps(journal, params):
    if params["step"]:
        orch.record_step(journal, params["step"], params["status"], params["data"])
    for record in params["steps"] or []:
        if not record.get("step") or record.get("status", "done") not in ("started", "done", "failed", "skipped"):
            raise orch.OrchestrateError("each of steps needs a step name and a status of started, done, failed or skipped")
        orch.record_step(journal, record["step"], record.get("status", "done"), record.get("data"))


def finish(module, root, holder, hostname):
    params = module.params
    if not params["result"]:
        raise orch.OrchestrateError("state=finish needs result")
    summary = params["summary"] or {}
    journal = orch.load_journal(root, params["kind"])
    if journal is None:
        if module.check_mode:
            journal = orch.new_journal(params["kind"], params["reason"], params["user"], params["plan"], holder)
        else:
            raise orch.OrchestrateError("no run in progress for this project: nothing to finish")
    if params["steps"] and not module.check_mode:
        orch.check_lock(root, holder)
        record_steps(journal, dict(params, step=None))
    record = orch.audit_record(journal, params["result"], summary, hostname, utc_now())
    report = orch.render_report(params["project_name"], record, journal)
    result = dict(changed=not module.check_mode, run_id=journal["run_id"], audit=record, report=report,
                  journal=journal, done=orch.done_steps(journal), marked_bad=[])
    if module.check_mode:
        return result
    orch.check_lock(root, holder)
    target = (summary.get("to") or {}).get("snapshot_id") or journal.get("plan", {}).get("snapshot_id")
    if params["result"] == "success" and params["bad_state"]:
        result["marked_bad"] = orch.mark_bad_state(
            root, params["bad_state"], "rolled back away from in run %s" % journal["run_id"], keep={target})
    if params["result"] == "success" and params["kind"] == "rollback" and params["promote"]:
        result["last_known_good"] = orch.promote_target(root, target)
    orch.append_line(audit_path(module, root), record)
    result["report_path"] = os.path.join(orch.archive_run(root, journal, report), "report.md")
    if params["metrics_dir"]:
        result["metrics_path"] = write_metrics(module, record, summary)
    if params["release"]:
        orch.release_lock(root, holder)
        result["lock"] = "released"
    else:
        result["lock"] = "held"
    return result


def write_metrics(module, record, summary):
    """The run's metrics for node_exporter's textfile collector; a failure to write them is a warning."""
    if record["kind"] not in ("rollback", "deploy"):
        return None
    tiers = record.get("tiers") or []
    try:
        return _metrics.record_run(module.params["metrics_dir"], module.params["project_name"], record["kind"],
                                   tiers[-1] if tiers else "none", record["result"], record["duration_s"],
                                   summary.get("snapshot_age_s"), time.time())["path"]
    except (_metrics.MetricsError, OSError) as exc:
        module.warn("metrics not written: %s" % exc)
        return None


def record_metrics(module):
    """state=record: a tier run on its own, counted in the metrics as the orchestrator counts its runs."""
    params = module.params
    missing = [key for key in ("tier", "result", "started_epoch", "metrics_dir") if params[key] in (None, "")]
    if missing:
        raise orch.OrchestrateError("state=record needs %s" % ", ".join(missing))
    if params["tier"] == "auto" or params["kind"] != "rollback":
        raise orch.OrchestrateError("state=record counts one tier's rollback: give kind=rollback and the tier that ran")
    result = dict(changed=False, metrics_path=None)
    if module.check_mode or params["result"] == "planned":
        return result
    line = dict(kind="rollback", tiers=[params["tier"]], result=params["result"],
                duration_s=round(max(0.0, time.time() - params["started_epoch"]), 3))
    result["metrics_path"] = write_metrics(module, line, {})
    result["changed"] = result["metrics_path"] is not None
    return result


def status(root, kind):
    holder = orch.read_json(os.path.join(root, orch.LOCK))
    journal = orch.load_journal(root, kind)
    return dict(changed=False, holder=holder, journal=journal or {}, done=orch.done_steps(journal or {}),
                run_id=(journal or {}).get("run_id"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **BACKUP_ROOT_ARGUMENT_SPEC,
            **PROJECT_LOOKUP_ARGUMENT_SPEC,
            state=dict(type="str", required=True, choices=["begin", "step", "finish", "status", "record"]),
            snapshot_id=dict(type="str"),
            first_step=dict(type="str"),
            apply_first=dict(type="bool", default=False),
            started_epoch=dict(type="float"),
            steps=dict(type="list", elements="dict"),
            kind=dict(type="str", default="rollback", choices=["rollback", "deploy", "emergency"]),
            holder=dict(type="dict"),
            reason=dict(type="str", default=""),
            user=dict(type="str"),
            lock_ttl_s=dict(type="int"),
            break_lock=dict(type="bool", default=False),
            plan=dict(type="dict"),
            tier=dict(type="str", choices=["auto", "config", "images", "code", "full"]),
            differences=dict(type="dict"),
            escalate=dict(type="bool", default=True),
            step=dict(type="str"),
            status=dict(type="str", default="done", choices=["started", "done", "failed", "skipped"]),
            data=dict(type="dict"),
            result=dict(type="str", choices=["success", "failed", "aborted", "refused", "planned"]),
            summary=dict(type="dict"),
            bad_state=dict(type="dict"),
            audit_log=dict(type="path"),
            metrics_dir=dict(type="path"),
            release=dict(type="bool", default=True),
            promote=dict(type="bool", default=True),
        ),
        required_one_of=PROJECT_LOOKUP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params = module.params
    assessment = Assessment(module) if (params["state"] == "begin" and params["project_dir"]) else None
    if assessment:
        params["project_name"] = assessment.target["project_name"]
    elif not params["project_name"]:
        params["project_name"] = resolve_project_name(module, params)
    hostname = socket.gethostname()
    holder = params["holder"] or {"host": hostname, "pid": os.getppid(), "user": None}
    if params["lock_ttl_s"] is not None and params["lock_ttl_s"] <= 0:
        module.fail_json(msg="lock_ttl_s must be positive")
    try:
        root = project_root(params["backup_root"], params["project_name"])
        if params["state"] == "begin":
            result = begin(module, root, holder, hostname, assessment)
        elif params["state"] == "step":
            result = step(module, root, holder)
        elif params["state"] == "finish":
            result = finish(module, root, holder, hostname)
        elif params["state"] == "record":
            result = record_metrics(module)
        else:
            result = status(root, params["kind"])
    except (orch.OrchestrateError, ManifestError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
