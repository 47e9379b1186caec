"""Run this checkout's playbooks through ansible-runner the way an AWX job template runs them.

    job = AwxJob.prepare(tmp_path / "job", "playbooks/rollback_images.yml", host_vars,
                         survey={"lastgood_snapshot_id": sid}, credentials={"LASTGOOD_DB_PASSWORD": pw},
                         job_type="check")
    job.run()
    job.status, job.rc, job.outcome()["result"], job.failure_msgs(), job.artifacts

AWX hands ansible-runner a private data directory and reads back what the run left in it;
this helper writes the same pieces:

  project/            the project checkout: here a link to this repository (playbooks by path)
  inventory/hosts     the job's inventory as JSON (one host, local connection)
  env/extravars       survey answers: strings, tagged !unsafe like AWX does (no templating),
                      plus awx_* job variables
  env/envvars         what the job's credentials inject (passwords travel as env vars)
  env/cmdline         "--check" for a job of type check
  env/settings        the runner settings AWX passes: output only as job events (no stdout
                      file, nothing echoed), the template's timeout

and runs `ansible-runner run <dir> -p <playbook>` in a process of its own with a clean
environment, as AWX runs it in the execution environment. The collection comes from this
checkout's .collections (ANSIBLE_COLLECTIONS_PATH), as an EE would have it installed.
What the run reports is read from artifacts/<ident>/: status, rc and job_events/,
whose playbook_on_stats event carries the set_stats data AWX shows as the job's artifacts,
and whose stdout fields, in order, are the output AWX shows.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

try:
    from . import stacks
except ImportError:
    import stacks

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
ANSIBLE_RUNNER = VENV_BIN / "ansible-runner"
PYTHON = VENV_BIN / "python"
COLLECTIONS_PATH = REPO_ROOT / ".collections"
HOST = "target"

# AWX job types and what they add to the ansible-playbook command line.
JOB_TYPE_ARGS = {"run": [], "check": ["--check"]}

# What AWX passes ansible-runner as settings for a job (awx/main/tasks/jobs.py): it reads the
# output from the job events only, and the job template's timeout (0: none).
AWX_RUNNER_SETTINGS = {"job_timeout": 0, "suppress_ansible_output": True, "suppress_output_file": True}


def runner_env(extra=None):
    """The environment ansible-runner starts with: the caller's, less anything that would
    redirect a stack (stacks.clean_env) or change Ansible's settings, plus the collection path."""
    env = {key: value for key, value in stacks.clean_env().items() if not key.startswith("ANSIBLE_")}
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        # ansible-runner lives in the venv; ansible-playbook must be the venv's too.
        "PATH": "%s:%s" % (VENV_BIN, env.get("PATH", "/usr/bin:/bin")),
    })
    env.update(extra or {})
    return env


def unsafe_yaml(values):
    """`values` as YAML with every string tagged !unsafe, as AWX writes survey answers into
    env/extravars (Ansible then never templates them). JSON string escapes are valid YAML."""
    lines = ["---"]
    for key, value in values.items():
        if isinstance(value, str):
            lines.append("%s: !unsafe %s" % (key, json.dumps(value)))
        else:
            lines.append("%s: %s" % (key, json.dumps(value)))
    return "\n".join(lines) + "\n"


class AwxJob:
    """One AWX-style job: a private data directory, one ansible-runner run and its artifacts."""

    def __init__(self, private_data_dir, playbook, job_type="run", ident=None):
        self.dir = Path(private_data_dir)
        self.playbook = playbook
        self.job_type = job_type
        self.ident = ident or uuid.uuid4().hex[:12]
        self.proc = None
        self.duration_s = None
        self._events = None

    # -- preparing -------------------------------------------------------------------------

    @classmethod
    def prepare(cls, private_data_dir, playbook, host_vars, survey=None, credentials=None, job_type="run",
                template_name="lastgood"):
        """Write the private data directory of a job that runs `playbook` (project-relative,
        e.g. "playbooks/snapshot.yml") on one host with `host_vars`.

        survey: the answers, given as AWX stores them (strings for text and multiple choice);
        credentials: env vars the job's credentials inject; job_type: "run" or "check".
        """
        if job_type not in JOB_TYPE_ARGS:
            raise ValueError("job_type must be one of %s" % ", ".join(JOB_TYPE_ARGS))
        job = cls(private_data_dir, playbook, job_type)
        (job.dir / "inventory").mkdir(parents=True, exist_ok=True)
        (job.dir / "env").mkdir(exist_ok=True)
        project = job.dir / "project"
        if not project.exists():
            project.symlink_to(REPO_ROOT, target_is_directory=True)
        inventory = {"all": {"hosts": {HOST: dict(host_vars, ansible_connection="local",
                                                  ansible_python_interpreter=str(PYTHON))}}}
        # AWX writes the inventory as a script or file; a JSON file is what runner accepts too.
        (job.dir / "inventory" / "hosts").write_text(json.dumps(inventory, indent=2))
        extravars = {"awx_job_id": 1, "awx_job_template_name": template_name, "awx_job_launch_type": "manual",
                     "awx_user_name": "awx-operator"}
        extravars.update(survey or {})
        (job.dir / "env" / "extravars").write_text(unsafe_yaml(extravars))
        envvars = job.dir / "env" / "envvars"
        envvars.write_text(json.dumps(credentials or {}))
        envvars.chmod(0o600)
        (job.dir / "env" / "settings").write_text(json.dumps(AWX_RUNNER_SETTINGS))
        if JOB_TYPE_ARGS[job_type]:
            (job.dir / "env" / "cmdline").write_text(" ".join(JOB_TYPE_ARGS[job_type]))
        return job

    # -- running ---------------------------------------------------------------------------

    def command(self):
        return [str(ANSIBLE_RUNNER), "run", str(self.dir), "-p", self.playbook, "--ident", self.ident]

    def run(self, timeout=300, env=None):
        """Run the job to its end (`ansible-runner run`, in the foreground); returns self."""
        started = time.monotonic()
        self.proc = subprocess.run(self.command(), env=runner_env(env), capture_output=True, text=True,
                                   timeout=timeout, check=False)
        self.duration_s = time.monotonic() - started
        self._events = None
        return self

    # -- what the run left ------------------------------------------------------------------

    @property
    def artifact_dir(self):
        return self.dir / "artifacts" / self.ident

    def _artifact_text(self, name):
        path = self.artifact_dir / name
        return path.read_text() if path.is_file() else None

    @property
    def status(self):
        """`successful`, `failed`, `timeout` or `canceled`, as AWX shows the job's status."""
        text = self._artifact_text("status")
        return text.strip() if text is not None else None

    @property
    def rc(self):
        text = self._artifact_text("rc")
        return int(text) if text is not None else None

    @property
    def stdout(self):
        """The job's output as AWX shows it: the stdout of its events, in order (AWX has
        ansible-runner write no stdout file)."""
        return "\n".join(event["stdout"] for event in self.events if event.get("stdout"))

    def shown_text(self):
        """Everything AWX shows of the job: its output and every job event, for leak checks.

        Not artifacts/<ident>/command: ansible-runner records there the whole environment it
        started ansible-playbook with, credentials included, for itself (AWX deletes the private
        data directory after the job and masks secrets in the environment it shows).
        """
        texts = [self.stdout]
        texts += [path.read_text(errors="replace") for path in sorted((self.artifact_dir / "job_events").glob("*.json"))]
        return "\n".join(texts)

    @property
    def events(self):
        """The job events in the order they happened (what AWX stores and shows)."""
        if self._events is None:
            events = []
            for path in (self.artifact_dir / "job_events").glob("*.json"):
                events.append(json.loads(path.read_text()))
            self._events = sorted(events, key=lambda event: event.get("counter", 0))
        return self._events

    def events_of(self, kind):
        return [event for event in self.events if event.get("event") == kind]

    @property
    def stats(self):
        """event_data of playbook_on_stats: ok, changed, failures ... per host, and artifact_data."""
        found = self.events_of("playbook_on_stats")
        if len(found) != 1:
            raise AssertionError("%d playbook_on_stats events\n%s" % (len(found), self.describe()))
        return found[0]["event_data"]

    @property
    def artifacts(self):
        """What set_stats published: the job's artifacts in AWX."""
        return self.stats.get("artifact_data") or {}

    def outcome(self, host=HOST):
        outcomes = self.artifacts.get("lastgood_outcome") or {}
        if host not in outcomes:
            raise AssertionError("no lastgood_outcome for %s in the artifacts\n%s" % (host, self.describe()))
        return outcomes[host]

    def changed(self, host=HOST):
        return self.stats.get("changed", {}).get(host, 0)

    def failures(self):
        """[(task name, result)] of the failed tasks that were not ignored."""
        return [(event["event_data"].get("task"), event["event_data"].get("res") or {})
                for event in self.events_of("runner_on_failed")
                if not event["event_data"].get("ignore_errors")]

    def failure_msgs(self):
        return [str(result.get("msg")) for _task, result in self.failures()]

    def __repr__(self):
        return "AwxJob(%s %s, ident=%s, status=%s, rc=%s, %.1f s)" % (
            self.job_type, self.playbook, self.ident, self.status, self.rc, self.duration_s or 0.0)

    def describe(self):
        """Everything needed to understand a failed assertion."""
        runner_output = ""
        if self.proc is not None:
            runner_output = "--- ansible-runner stderr ---\n%s" % self.proc.stderr[-3000:]
        return "%r\n--- job stdout ---\n%s\n%s" % (self, self.stdout[-15000:], runner_output)
