"""The playbooks as AWX runs them: through ansible-runner, against a real demo stack.

Each job gets an AWX-style private data directory (see runner_support.py): the inventory,
survey answers as the strings AWX stores (tagged !unsafe), credentials as environment
variables, `--check` for a job of type check. Every test asserts on what AWX itself reads
back: the job status, the return code and the set_stats artifacts (lastgood_outcome.<host>).

JOBS is one AWX day in order: snapshot (with a database credential), the broken release goes
out, verify fails, a check job plans the image rollback and changes nothing, the rollback
job, verify passes again. A new playbook (rollback.yml, deploy.yml) joins with one Job row:
its survey answers (with {snapshot_id} filled in), the job type, the status and outcome
keys AWX must see, and whether the job must leave the stack untouched.

FAULTS are jobs launched with survey answers of the wrong type: the role's argument spec
refuses them before any task runs, naming the option; nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

try:
    from . import ansible_run, runner_support, stacks
except ImportError:
    import ansible_run
    import runner_support
    import stacks

DB_PASSWORD_VAR = "LASTGOOD_DB_PASSWORD"


@dataclass(frozen=True)
class Job:
    name: str
    playbook: str
    survey: dict = field(default_factory=dict)
    job_type: str = "run"
    status: str = "successful"
    outcome: dict = field(default_factory=dict)
    changes_nothing: bool = False
    before: str = ""  # a Scenario method that changes the world before the job runs


JOBS = (
    Job("snapshot", "playbooks/snapshot.yml",
        # Survey answers are strings: the argument specs turn "5" into an int and "no" into false.
        survey={"lastgood_snapshot_reason": "before release 2 {{ not templated }}",
                "lastgood_keep_snapshots": "5", "lastgood_force": "no"},
        outcome={"tier": "snapshot", "result": "success", "healthy": True, "check_mode": False,
                 "last_known_good": True}),
    Job("verify broken release", "playbooks/verify.yml", before="deploy_broken_release",
        survey={"lastgood_snapshot_id": "{snapshot_id}"}, status="failed", changes_nothing=True,
        outcome={"tier": "verify", "result": "failed", "healthy": False, "snapshot_id": "{snapshot_id}"}),
    Job("rollback_images check", "playbooks/rollback_images.yml", job_type="check",
        survey={"lastgood_snapshot_id": "{snapshot_id}"}, changes_nothing=True,
        outcome={"tier": "images", "result": "planned", "check_mode": True, "services_changed": ["app"],
                 "images_retagged": ["app"], "healthy": None, "snapshot_id": "{snapshot_id}"}),
    Job("rollback_images", "playbooks/rollback_images.yml",
        survey={"lastgood_snapshot_id": "{snapshot_id}"},
        outcome={"tier": "images", "result": "success", "check_mode": False, "services_changed": ["app"],
                 "healthy": True, "snapshot_id": "{snapshot_id}"}),
    Job("verify", "playbooks/verify.yml", changes_nothing=True,
        outcome={"tier": "verify", "result": "success", "healthy": True, "snapshot_id": "{snapshot_id}"}),
    # The orchestrator as AWX runs it: a check job plans, the run picks the image tier itself.
    Job("rollback check", "playbooks/rollback.yml", job_type="check", before="deploy_broken_release",
        survey={"lastgood_tier": "auto", "lastgood_confirm": "false", "lastgood_reason": "v2 fails /health"},
        changes_nothing=True,
        outcome={"result": "planned", "check_mode": True, "planned_attempts": [["images"], ["full"]]}),
    Job("rollback", "playbooks/rollback.yml",
        survey={"lastgood_tier": "auto", "lastgood_confirm": "false", "lastgood_reason": "v2 fails /health"},
        outcome={"result": "success", "tiers": ["images"], "escalations": 0, "healthy": True, "check_mode": False}),
    # A deploy of the broken release through its template: watched, rolled back, the job fails.
    Job("deploy broken release", "playbooks/deploy.yml", status="failed",
        survey={"lastgood_deploy_env": {"APP_IMAGE": "{v2_ref}"}, "lastgood_watch_s": "10",
                "lastgood_watch_interval_s": "0.5", "lastgood_watch_failures": "3", "lastgood_deploy_rollback": "true",
                "lastgood_reason": "release 3"},
        # healthy: the stack at the end (the previous version, rolled back); the release's verdict is failed.
        outcome={"tier": "deploy", "result": "rolled_back", "verdict": "failed", "healthy": True}),
)


class Scenario:
    """One demo stack and the AWX jobs run against it, in JOBS order."""

    def __init__(self, stack, client, work):
        self.stack = stack
        self.client = client
        self.work = work
        self.backup_root = work / "backups"
        self.host_vars = ansible_run.stack_host_vars(
            stack, self.backup_root,
            # The inventory names the credential's variable; the password itself comes from the
            # job's credential (env/envvars) and must show nowhere in what the job leaves.
            lastgood_databases=[{"name": "app", "host": "127.0.0.1", "port": stack.ports["db"], "user": "postgres",
                                 "password": "{{ lookup('ansible.builtin.env', '%s') }}" % DB_PASSWORD_VAR}],
            # The broken release never gets healthy: its verify job waits this long, not a minute.
            health_gate_deadline_s=20)
        self.credentials = {DB_PASSWORD_VAR: stack.password}
        self.values = {}
        self.jobs = {}
        self.states = {}
        self.v2_id = None

    def fill(self, value):
        """A survey answer or expected value with {snapshot_id} etc. filled in."""
        if isinstance(value, str) and "{" in value and "{{" not in value:
            return value.format(**self.values)
        if isinstance(value, dict):
            return {key: self.fill(item) for key, item in value.items()}
        return value

    def state(self):
        watched = (self.v2_id,) if self.v2_id else ()
        return ansible_run.stack_state(self.client, self.stack, self.backup_root, watched_images=watched)

    def run(self, job):
        if job.before:
            getattr(self, job.before)()
        self.states[job.name, "before"] = self.state()
        awx_job = runner_support.AwxJob.prepare(
            self.work / job.name.replace(" ", "-"), job.playbook, self.host_vars, survey=self.fill(job.survey),
            credentials=self.credentials, job_type=job.job_type, template_name="lastgood %s" % job.name)
        self.jobs[job.name] = awx_job.run()
        self.states[job.name, "after"] = self.state()
        if job.name == "snapshot" and awx_job.status == "successful":
            self.values["snapshot_id"] = awx_job.outcome()["snapshot_id"]
        return awx_job

    def deploy_broken_release(self):
        """What the failed deploy left: the app reference on a broken v2 of this test's own."""
        self.v2_id = ansible_run.throwaway_image(self.client, stacks.APP_V2, "lastgood-test/app",
                                                 self.stack.project + "-awx-v2", self.stack.project)
        self.values["v2_ref"] = "lastgood-test/app:%s-awx-v2" % self.stack.project
        self.stack.tag_app(self.v2_id)
        self.stack.compose("up", "-d", "--no-deps", "app")
        stacks.wait_until(lambda: self.stack.image_id("app") == self.v2_id, 30, message="app runs v2")


@pytest.fixture(scope="module")
def scenario(module_stack, docker_client, tmp_path_factory):
    stack = module_stack()
    scenario = Scenario(stack, docker_client, tmp_path_factory.mktemp("awx"))
    try:
        for job in JOBS:
            scenario.run(job)
        yield scenario
    finally:
        stack.destroy()
        ansible_run.remove_snapshot_pins(docker_client, scenario.backup_root)
        if scenario.v2_id:
            ansible_run.remove_image(docker_client, scenario.v2_id)


@pytest.mark.parametrize("job", JOBS, ids=[job.name for job in JOBS])
def test_job_status_and_artifacts(scenario, job):
    awx_job = scenario.jobs[job.name]
    assert awx_job.status == job.status, awx_job.describe()
    assert (awx_job.rc == 0) == (job.status == "successful"), awx_job.describe()
    outcome = awx_job.outcome()
    expected = scenario.fill(job.outcome)
    assert {key: outcome.get(key) for key in expected} == expected, awx_job.describe()
    if job.status == "failed":
        assert awx_job.failure_msgs(), awx_job.describe()


@pytest.mark.parametrize("job", [job for job in JOBS if job.changes_nothing],
                         ids=[job.name for job in JOBS if job.changes_nothing])
def test_job_changes_nothing(scenario, job):
    """Check jobs (and read-only playbooks) leave containers, image tags and snapshots as they were."""
    awx_job = scenario.jobs[job.name]
    assert scenario.states[job.name, "after"] == scenario.states[job.name, "before"], awx_job.describe()
    if job.job_type == "check":
        # The recap of a check job counts what the run would change: the plan is not empty.
        assert awx_job.changed() > 0, awx_job.describe()
    else:
        assert awx_job.changed() == 0, awx_job.describe()


def test_check_job_plans_the_rollback_it_does_not_make(scenario):
    check = scenario.jobs["rollback_images check"]
    before = scenario.states["rollback_images check", "before"]
    assert before["app_reference"] == scenario.v2_id  # the check ran while v2 was deployed
    assert any("app" in line for line in check.stdout.splitlines() if "recreate" in line), check.describe()
    rollback = scenario.jobs["rollback_images"]
    assert rollback.outcome()["services_changed"] == check.outcome()["services_changed"]
    assert scenario.stack.image_id("app") == scenario.client.images.get(stacks.APP_V1).id


def test_survey_strings_reach_the_snapshot_unconverted_and_untemplated(scenario):
    manifest = ansible_run.read_manifest(scenario.backup_root, scenario.stack.project, scenario.values["snapshot_id"])
    assert manifest.get("reason") == "before release 2 {{ not templated }}", manifest.get("reason")
    assert "app" in (manifest.get("databases") or {}), manifest.get("databases")


def test_credentials_stay_out_of_every_job_artifact(scenario):
    for name, awx_job in scenario.jobs.items():
        assert scenario.stack.password not in awx_job.shown_text(), name
    manifest_dir = scenario.backup_root / scenario.stack.project / scenario.values["snapshot_id"]
    assert scenario.stack.password not in (manifest_dir / "manifest.json").read_text()


def test_job_events_are_what_awx_stores(scenario):
    """The event stream AWX shows: a start, the stats last, one runner event per task result."""
    awx_job = scenario.jobs["rollback_images"]
    kinds = [event["event"] for event in awx_job.events]
    assert kinds[0] == "playbook_on_start" and kinds[-1] == "playbook_on_stats", kinds
    ok_actions = {event["event_data"].get("task_action") for event in awx_job.events_of("runner_on_ok")}
    assert "lastgood.rollback.compose_image_restore" in ok_actions, sorted(ok_actions)


# -- survey answers of the wrong type --------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    playbook: str
    survey: dict
    message: tuple  # every one of these in the error


FAULTS = (
    Fault("playbooks/snapshot.yml", {"lastgood_keep_snapshots": "abc"}, ("snapshot_keep", "int", "abc")),
    Fault("playbooks/snapshot.yml", {"lastgood_force": "maybe"}, ("snapshot_force", "bool", "maybe")),
    # A text answer where the role takes a list of {name, ...} entries.
    Fault("playbooks/verify.yml", {"lastgood_databases": "app"}, ("verify_database_access", "dict")),
)


@pytest.fixture(scope="module")
def idle_stack(module_stack):
    """A stack the fault jobs point at; they must never reach it."""
    return module_stack(up=False)


@pytest.mark.parametrize("fault", FAULTS, ids=["%s %s" % (f.playbook.split("/")[-1], ",".join(f.survey)) for f in FAULTS])
def test_survey_answer_of_the_wrong_type_fails_the_job_naming_the_option(fault, idle_stack, docker_client, tmp_path):
    backup_root = tmp_path / "backups"
    host_vars = ansible_run.stack_host_vars(idle_stack, backup_root)
    before = ansible_run.stack_state(docker_client, idle_stack, backup_root)
    awx_job = runner_support.AwxJob.prepare(tmp_path / "job", fault.playbook, host_vars, survey=fault.survey).run()
    assert awx_job.status == "failed" and awx_job.rc != 0, awx_job.describe()
    messages = awx_job.failure_msgs()
    assert len(messages) == 1 and messages[0].startswith("Validation of arguments failed"), awx_job.describe()
    for word in fault.message:
        assert word in messages[0], messages[0]
    # Refused before the first task of the role: nothing ran, nothing changed.
    assert [event["event_data"].get("task_action") for event in awx_job.events_of("runner_on_ok")] == []
    assert ansible_run.stack_state(docker_client, idle_stack, backup_root) == before
