"""Issue figure: a playbook run through ansible-runner (as an AWX job runs it) costs no more than
10 % over the same run through ansible-playbook.

On a disposable demo stack with a last known good snapshot, runs each job RUNS times each way,
with the same inventory, extra vars, settings and collection path, alternating which way goes
first from round to round so that neither always meets a warmer machine:

  ansible-playbook -i <inventory> -e @<extravars> playbooks/<name>.yml   from the repository root
  ansible-runner run <private data dir> -p playbooks/<name>.yml          an AWX-style job (see
                                                                         tests/integration/runner_support.py)

PLAYBOOK=jobs (default) measures the three job templates of awx/: snapshot (each run writes a
snapshot), rollback (each run first breaks the app with the v2 image, and auto rolls it back
with the image tier) and deploy (each run deploys a new, healthy release, an APP_EXTRA_LATENCY_MS
change that recreates the app, and watches it WATCH_S seconds before promoting it).
PLAYBOOK=verify, snapshot, rollback or deploy measures one of them.

Prints the medians and the overhead of each job in seconds and per cent, and the median of each
round's own overhead (paired: the two ways of a round ran back to back); exits 1 when either
figure of a job is above TARGET_PCT.

It also splits every run into three phases with a bench-only callback (callback_plugins/
phase_marks.py, enabled both ways): startup (process start to the playbook's start), body (the
playbook's tasks) and teardown (its end to the process's end). Startup and teardown are what
ansible-runner adds around any job and vary little; the body's difference is what the event
stream costs, and it carries the machine's run-to-run spread of the job's own work (docker,
compose, PostgreSQL), which on a busy two-core machine is larger than the overhead itself.

It also runs an empty playbook both ways each round: the difference is what ansible-runner
costs any job whatever it runs (starting ansible-runner, its pty, the event callback), which no
playbook can avoid; the rest of a job's overhead is the event stream of its tasks.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time

from common import (
    REPO, Stack, docker_client, empty_playbook, median, remove_rolled_back_tags, rolled_back_tags, temp_dir,
)
from bench_rollback_images import deploy

sys.path.insert(0, str(REPO / "tests" / "integration"))
import runner_support  # noqa: E402  (after the path is set)
from ansible_run import remove_snapshot_pins  # noqa: E402

# The job-to-job spread (about +-0.1 s) is half the overhead measured: enough rounds for a steady median.
RUNS = int(os.environ.get("RUNS", "11"))
PLAYBOOK = os.environ.get("PLAYBOOK", "jobs")
WATCH_S = float(os.environ.get("WATCH_S", "3"))
TARGET_PCT = 10.0
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
JOB_TEMPLATES = ("snapshot", "rollback", "deploy")
EMPTY = "empty"
PHASES = ("startup", "body", "teardown")
CALLBACKS = REPO / "bench" / "callback_plugins"


def host_vars(stack, backup_root):
    return {
        "lastgood_project_dir": str(stack.dir),
        "lastgood_backup_root": str(backup_root),
        "lastgood_health_checks": [
            {"name": "app-health", "url": stack.url("app", "/health"), "status": [200], "timeout_s": 2},
            {"name": "static", "url": stack.url("static", "/"), "status": [200], "timeout_s": 2},
        ],
    }


class Bench:
    """One disposable stack and the runs of each job both ways."""

    def __init__(self, work, stack, empty):
        self.work = work
        self.stack = stack
        self.empty = str(empty)
        self.variables = host_vars(stack, work / "backups")
        self.releases = itertools.count(1)
        self.times = {}  # (name, way) -> [seconds]
        self.phases = {}  # (name, way) -> [(startup, body, teardown) seconds]
        self.marks = work / "phase-marks"
        self.env = {"ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS), "ANSIBLE_CALLBACKS_ENABLED": "phase_marks",
                    "PHASE_MARKS": str(self.marks)}

    def playbook_path(self, name):
        return self.empty if name == EMPTY else "playbooks/%s.yml" % name

    def before(self, name):
        """Prepare the stack for one run of `name`; returns the job's extra vars (survey)."""
        if name == "rollback":
            deploy(self.stack, "lastgood-demo/app:v2")
        if name == "deploy":
            # Every run deploys a release that differs from the one running: a real recreation.
            return {"lastgood_deploy_env": {"APP_EXTRA_LATENCY_MS": str(next(self.releases))},
                    "lastgood_watch_s": WATCH_S, "lastgood_watch_interval_s": 0.5, "lastgood_watch_failures": 3}
        return {}

    def job(self, name, way):
        directory = self.work / ("%s-%s-%d" % (name, way, len(self.times.get((name, way), ()))))
        return runner_support.AwxJob.prepare(directory, self.playbook_path(name), self.variables,
                                             survey=self.before(name))

    def split(self, started, ended):
        """(startup, body, teardown) of the run that went from `started` to `ended` (epoch)."""
        marks = dict(line.split() for line in self.marks.read_text().splitlines())
        self.marks.unlink()
        on_start, on_stats = float(marks["on_start"]), float(marks["on_stats"])
        return on_start - started, on_stats - on_start, ended - on_stats

    def via_ansible_runner(self, name):
        job = self.job(name, "runner")
        started = time.time()
        job.run(env=self.env)
        ended = time.time()
        if job.status != "successful":
            raise RuntimeError("ansible-runner job %s failed:\n%s" % (name, job.describe()))
        if name != EMPTY and "lastgood_outcome" not in job.artifacts:
            raise RuntimeError("the job published no lastgood_outcome artifact:\n%s" % job.describe())
        shutil.rmtree(job.dir)
        return job.duration_s, self.split(started, ended)

    def via_ansible_playbook(self, name):
        """The same job's inventory, extra vars and environment, through ansible-playbook."""
        job = self.job(name, "playbook")
        args = [str(ANSIBLE_PLAYBOOK), "-i", str(job.dir / "inventory" / "hosts"),
                "-e", "@%s" % (job.dir / "env" / "extravars"), self.playbook_path(name)]
        started, wall = time.monotonic(), time.time()
        proc = subprocess.run(args, cwd=REPO, env=runner_support.runner_env(self.env), capture_output=True, text=True,
                              check=False)
        elapsed = time.monotonic() - started
        ended = time.time()
        if proc.returncode != 0:
            raise RuntimeError("ansible-playbook %s failed (%d):\n%s" % (name, proc.returncode, proc.stdout[-4000:]))
        shutil.rmtree(job.dir)
        return elapsed, self.split(wall, ended)

    def round(self, names, runner_first, record=True):
        for name in names:
            ways = [("runner", self.via_ansible_runner), ("playbook", self.via_ansible_playbook)]
            for way, run in ways if runner_first else reversed(ways):
                seconds, phases = run(name)
                if record:
                    self.times.setdefault((name, way), []).append(seconds)
                    self.phases.setdefault((name, way), []).append(phases)

    def figures(self, name):
        base, runner = median(self.times[(name, "playbook")]), median(self.times[(name, "runner")])
        return base, runner, runner - base, (runner - base) / base * 100.0

    def phase_figures(self, name):
        """{phase: (playbook median, runner median, paired median of runner - playbook)}."""
        figures = {}
        for index, phase in enumerate(PHASES):
            base = [phases[index] for phases in self.phases[(name, "playbook")]]
            runner = [phases[index] for phases in self.phases[(name, "runner")]]
            figures[phase] = (median(base), median(runner), median([r - b for b, r in zip(base, runner)]))
        return figures

    def paired(self, name):
        """Median over rounds of each round's own overhead: both ways ran back to back, so a
        machine that slows down or speeds up between rounds cancels out. Seconds and per cent."""
        pairs = list(zip(self.times[(name, "playbook")], self.times[(name, "runner")]))
        return (median([runner - base for base, runner in pairs]),
                median([(runner - base) / base * 100.0 for base, runner in pairs]))


def print_phases(bench, name):
    phases = bench.phase_figures(name).items()
    print("      phases (playbook / runner / paired difference): %s"
          % "   ".join("%s %.2f / %.2f / %+.2f s" % ((phase,) + figures) for phase, figures in phases))


def main():
    names = list(JOB_TEMPLATES) if PLAYBOOK == "jobs" else [PLAYBOOK]
    work = temp_dir("lastgood-bench-runner-")
    client = docker_client()
    tags_before = rolled_back_tags(client)
    stack = Stack.create(work, client)
    bench = Bench(work, stack, empty_playbook(work))
    try:
        snapshot = runner_support.AwxJob.prepare(work / "snapshot", "playbooks/snapshot.yml", bench.variables).run()
        if snapshot.status != "successful":
            raise RuntimeError("snapshot failed:\n%s" % snapshot.describe())
        bench.round(names + [EMPTY], runner_first=True, record=False)  # warm both ways (page cache)
        for round_no in range(RUNS):
            bench.round(names + [EMPTY], runner_first=round_no % 2 == 0)
    finally:
        stack.destroy()
        remove_rolled_back_tags(client, tags_before)
        remove_snapshot_pins(client, work / "backups")
        shutil.rmtree(work, ignore_errors=True)

    empty_base, empty_runner, fixed, _pct = bench.figures(EMPTY)
    print("ansible-runner (an AWX-style job) vs ansible-playbook, %d rounds, medians (target <= %.0f %%)"
          % (RUNS, TARGET_PCT))
    print("  %-22s %9s %9s %10s %8s   %s" % ("playbook", "playbook", "runner", "overhead", "", "of which any job pays"))
    missed = []
    for name in names:
        base, runner, extra, pct = bench.figures(name)
        paired_s, paired_pct = bench.paired(name)
        verdict = "MISSED" if max(pct, paired_pct) > TARGET_PCT else "met"
        if verdict == "MISSED":
            missed.append(name)
        print("  %-22s %7.2f s %7.2f s %+8.2f s %+6.1f %%   %+.2f s (%.1f %%)   %s"
              % ("playbooks/%s.yml" % name, base, runner, extra, pct, fixed, fixed / base * 100.0, verdict))
        print("      paired: median of the rounds' own overhead %+.2f s, %+.1f %%" % (paired_s, paired_pct))
        print_phases(bench, name)
        for way in ("playbook", "runner"):
            print("      %-8s all: %s" % (way, " ".join("%.2f" % t for t in bench.times[(name, way)])))
    print("  an empty playbook: %.2f s through ansible-runner vs %.2f s: %+.2f s that any job pays (starting"
          " ansible-runner, its pty, the event callback); the rest of a job's overhead is the event stream"
          " of its tasks" % (empty_runner, empty_base, fixed))
    print_phases(bench, EMPTY)
    print("runner overhead: %s" % ("met for every job" if not missed else "MISSED for " + ", ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
