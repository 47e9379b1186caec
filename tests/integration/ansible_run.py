"""Run this checkout's playbooks and modules through ansible-playbook and read what happened.

    inventory = write_inventory(tmp_path, stack_host_vars(stack, backup_root))
    run = run_playbook("rollback_images", inventory, extra_vars={"lastgood_snapshot_id": sid})
    run.rc, run.recap["changed"], run.outcome()["services_changed"], run.failure_msg()

    result = run_module(inventory, "compose_image_restore", {...}, tmp_path, check=True).result()
    cycle = run_cycle(inventory, "compose_service", {...}, tmp_path, observe=docker_observers(stack))

ansible-playbook runs from the repository root with the repository's ansible.cfg
(collections_path=./.collections), the test's inventory (one host, local connection, this
venv's Python) and a JSON stdout callback.

Why a callback of our own: ansible-core 2.19 ships no JSON callback (``ansible.builtin.json``
is a redirect to ``ansible.posix.json``, a collection that is not installed and cannot be
fetched here). ``JsonCallback`` below prints the same document ``ansible.posix.json`` does,
so switching to that plugin later only changes ANSIBLE_STDOUT_CALLBACK:

    {"plays": [{"play": {...}, "tasks": [{"task": {"name": ...}, "hosts": {host: result}}]}],
     "stats": {host: {"ok", "changed", "failures", ...}},
     "custom_stats": {host: ...},          set_stats(per_host=true)
     "global_custom_stats": {...}}         set_stats(per_host=false, the default): what AWX
                                           shows as the job's artifacts

Only the standard library and ansible are imported at module level: ansible-playbook loads
this file for its stdout callback (through a small generated shim, see _callback_dir()).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase
from ansible.vars.clean import strip_internal_keys

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_DIR = REPO_ROOT / "playbooks"
ANSIBLE_CFG = REPO_ROOT / "ansible.cfg"
# ansible.cfg's collections_path: where ansible-playbook finds lastgood.rollback (this checkout).
COLLECTION_LINK = REPO_ROOT / ".collections" / "ansible_collections" / "lastgood" / "rollback"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
# The Python that runs the modules on the (local) managed host: the venv's, which has the
# Docker SDK; the venv's ansible-playbook, so both are this checkout's environment.
PYTHON = VENV_BIN / "python" if (VENV_BIN / "python").exists() else Path(sys.executable)
ANSIBLE_PLAYBOOK = PYTHON.parent / "ansible-playbook"

HOST = "target"
CALLBACK_NAME = "lastgood_test_json"


# -- the stdout callback ---------------------------------------------------------------------

class JsonCallback(CallbackBase):
    """Collects every task result and prints one JSON document at the end of the run."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = CALLBACK_NAME

    def __init__(self, display=None):
        super().__init__(display)
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name(), "id": str(play._uuid)}, "tasks": []})

    def _start_task(self, task):
        if not self.plays:  # results of a play that failed to start
            self.plays.append({"play": {"name": "", "id": ""}, "tasks": []})
        self.plays[-1]["tasks"].append(
            {"task": {"name": task.get_name(), "id": str(task._uuid), "action": task.action}, "hosts": {}})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start_task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start_task(task)

    def _record(self, result, **flags):
        data = strip_internal_keys(dict(result.result))
        data.update(flags)
        data["action"] = result.task.action
        tasks = self.plays[-1]["tasks"] if self.plays else []
        if not tasks or tasks[-1]["task"]["id"] != str(result.task._uuid):
            self._start_task(result.task)
            tasks = self.plays[-1]["tasks"]
        tasks[-1]["hosts"][result.host.get_name()] = data

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True, ignore_errors=bool(ignore_errors))

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        custom = {getattr(key, "name", key): value for key, value in (stats.custom or {}).items()}
        global_custom = custom.pop("_run", {})
        document = {"plays": self.plays, "stats": summary, "custom_stats": custom,
                    "global_custom_stats": global_custom}
        self._display.display(json.dumps(document, cls=AnsibleJSONEncoder, sort_keys=True))


_CALLBACK_SHIM = """\
# Generated by tests/integration/ansible_run.py: loads its JsonCallback as a stdout callback.
import importlib.util
import sys
_SPEC = importlib.util.spec_from_file_location("lastgood_test_ansible_run", {path!r})
_MODULE = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = _MODULE
_SPEC.loader.exec_module(_MODULE)
CallbackModule = _MODULE.JsonCallback
"""

_callback_dir_path = None


def _callback_dir():
    """A private directory holding only the shim (ansible loads every plugin of such a dir)."""
    global _callback_dir_path  # pylint: disable=global-statement
    if _callback_dir_path is None or not os.path.isfile(os.path.join(_callback_dir_path, CALLBACK_NAME + ".py")):
        directory = tempfile.mkdtemp(prefix="lastgood-callback-")
        atexit.register(shutil.rmtree, directory, True)
        with open(os.path.join(directory, CALLBACK_NAME + ".py"), "w", encoding="utf-8") as handle:
            handle.write(_CALLBACK_SHIM.format(path=str(Path(__file__).resolve())))
        _callback_dir_path = directory
    return _callback_dir_path


# -- running ---------------------------------------------------------------------------------

class AnsibleRun:
    """One finished ansible-playbook process and the JSON document it printed."""

    def __init__(self, args, rc, stdout, stderr, duration_s):
        self.args = args
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.duration_s = duration_s
        try:
            self.output = json.loads(stdout)
        except ValueError:
            self.output = None

    def __repr__(self):
        return "AnsibleRun(rc=%s, %.1f s, %s)" % (self.rc, self.duration_s, " ".join(self.args[1:]))

    def describe(self):
        """Everything needed to understand a failed assertion."""
        return "%r\n--- stdout ---\n%s\n--- stderr ---\n%s" % (self, self.stdout[-20000:], self.stderr[-5000:])

    def _document(self):
        if self.output is None:
            raise AssertionError("ansible-playbook printed no JSON document\n" + self.describe())
        return self.output

    def task_results(self, host=HOST):
        """[(task name, result)] for `host`, in the order the tasks ran."""
        found = []
        for play in self._document()["plays"]:
            for task in play["tasks"]:
                if host in task["hosts"]:
                    found.append((task["task"]["name"], task["hosts"][host]))
        return found

    def results_of(self, task_name, host=HOST):
        """Results of the tasks named `task_name`, with or without the "<role> : " prefix."""
        return [result for name, result in self.task_results(host)
                if name == task_name or name.endswith(" : " + task_name)]

    def results_of_module(self, module, host=HOST):
        """Results of the tasks that ran `module` (e.g. "lastgood.rollback.compose_service")."""
        return [result for name, result in self.task_results(host) if result.get("action") == module]

    def result(self, task_name=None, host=HOST):
        """The result of the one task named `task_name` (or of the only/last task)."""
        if task_name is None:
            results = self.task_results(host)
            if not results:
                raise AssertionError("no task ran on %s\n%s" % (host, self.describe()))
            return results[-1][1]
        results = self.results_of(task_name, host)
        if len(results) != 1:
            raise AssertionError("task %r ran %d times on %s\n%s" % (task_name, len(results), host, self.describe()))
        return results[0]

    def failures(self, host=HOST):
        """[(task name, result)] of the failures that were not ignored."""
        return [(name, result) for name, result in self.task_results(host)
                if result.get("failed") and not result.get("ignore_errors")]

    def failure_msg(self, host=HOST):
        """`msg` of the failure that ended the play (the last one not ignored)."""
        failed = self.failures(host)
        if not failed:
            raise AssertionError("no task failed on %s\n%s" % (host, self.describe()))
        return str(failed[-1][1].get("msg"))

    @property
    def recap(self):
        """The PLAY RECAP line of the host: ok, changed, failures, skipped, rescued, ..."""
        return self._document()["stats"][HOST]

    @property
    def global_custom_stats(self):
        return self._document()["global_custom_stats"]

    def outcome(self, host=HOST):
        """What the playbook published with set_stats under lastgood_outcome for `host`."""
        outcomes = self.global_custom_stats.get("lastgood_outcome")
        if not outcomes or host not in outcomes:
            raise AssertionError("no lastgood_outcome for %s in the custom stats\n%s" % (host, self.describe()))
        return outcomes[host]


def ansible_env(env=None):
    """The environment for ansible-playbook: the caller's, less what would redirect a stack
    (see stacks.clean_env), plus this checkout's configuration and the JSON callback."""
    try:
        from . import stacks
    except ImportError:
        import stacks
    if not (COLLECTION_LINK / "galaxy.yml").is_file():
        raise RuntimeError("%s does not lead to this checkout: run `make setup` (scripts/setup-venv.sh links it)"
                           % COLLECTION_LINK)
    merged = stacks.clean_env()
    for key in list(merged):
        # The caller's own ansible settings must not change what the tests see.
        if key.startswith("ANSIBLE_"):
            del merged[key]
    merged.update({
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_STDOUT_CALLBACK": CALLBACK_NAME,
        "ANSIBLE_CALLBACK_PLUGINS": _callback_dir(),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    merged.update(env or {})
    return merged


def run_ansible_playbook(playbook, inventory, extra_vars=None, check=False, env=None, timeout=300):
    args = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)]
    if extra_vars:
        args += ["-e", json.dumps(extra_vars)]
    if check:
        args.append("--check")
    started = time.monotonic()
    proc = subprocess.run(args, cwd=REPO_ROOT, env=ansible_env(env), capture_output=True, text=True,
                          timeout=timeout, check=False)
    return AnsibleRun(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def run_playbook(name, inventory, extra_vars=None, check=False, env=None, timeout=300):
    """Run playbooks/<name>.yml of this checkout, as an operator would from the repository root."""
    return run_ansible_playbook(PLAYBOOK_DIR / ("%s.yml" % name), inventory, extra_vars=extra_vars,
                                check=check, env=env, timeout=timeout)


class PlaybookScenario:
    """Playbooks run in order against one stack: each run, and what state() saw right after it."""

    def __init__(self, stack, client, work):
        self.stack = stack
        self.client = client
        self.work = work
        self.backup_root = work / "backups"
        self.inventory = write_inventory(work, stack_host_vars(stack, self.backup_root))
        self.states = {}
        self.runs = {}

    def state(self):
        raise NotImplementedError

    def step(self, label, playbook, **kwargs):
        self.runs[label] = run_playbook(playbook, self.inventory, **kwargs)
        self.states[label] = self.state()
        return self.runs[label]


def kill_at_journal_step(playbook, inventory, journal, step, status="started", extra_vars=None, timeout=240):
    """Run playbooks/<playbook>.yml and SIGKILL it (its whole process group) as soon as the run's
    journal file records `step` with `status`: an interruption at a chosen point. Returns the
    journal as the killed run left it."""
    import stacks  # pylint: disable=import-outside-toplevel
    args = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK_DIR / ("%s.yml" % playbook))]
    if extra_vars:
        args += ["-e", json.dumps(extra_vars)]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=ansible_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)

    def reached():
        try:
            steps = json.loads(Path(journal).read_text())["steps"]
        except (OSError, ValueError, KeyError):
            return False
        return any(record["step"] == step and record["status"] == status for record in steps)
    try:
        stacks.wait_until(reached, timeout, interval=0.02, message="the journal records %s %s" % (step, status))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return json.loads(Path(journal).read_text())


def run_deploy(inventory, env, **extra_vars):
    """playbooks/deploy.yml with `env` as the new version's .env values (lastgood_deploy_env)."""
    return run_playbook("deploy", inventory, extra_vars=dict({"lastgood_deploy_env": env}, **extra_vars))


def env_file_value(directory, key):
    """The value of `key` in directory/.env as written there (quotes kept), or None."""
    for line in (Path(directory) / ".env").read_text().splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1]
    return None


def run_tasks(inventory, tasks, workdir, env=None, timeout=300):
    """Run `tasks` (a list of task dicts) as a one-play playbook written into `workdir`."""
    play = [{"name": "lastgood.rollback integration test", "hosts": HOST, "gather_facts": False, "tasks": tasks}]
    fd, path = tempfile.mkstemp(dir=str(workdir), prefix="play-", suffix=".yml")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(play, handle, indent=2)  # JSON is YAML
    return run_ansible_playbook(path, inventory, env=env, timeout=timeout)


def run_module(inventory, module, args, workdir, check=False, env=None, timeout=300):
    """Run lastgood.rollback.<module> once; `.result()` of the returned run is its result."""
    task = {"name": module, "lastgood.rollback.%s" % module: args, "check_mode": bool(check), "diff": True}
    return run_tasks(inventory, [task], workdir, env=env, timeout=timeout)


CYCLE = (("check", True), ("run", False), ("check again", True), ("run again", False))


def observation(result):
    """What an observer task saw, without its timings (a command's start, end and delta)."""
    if "stdout" in result:
        return {"rc": result.get("rc"), "stdout": result["stdout"]}
    return result


class CycleRun:
    """The four steps of a check/real/check/real cycle and what the observers saw around them."""

    def __init__(self, run, observers):
        self.run = run
        self.results = {}
        self.observed = {}
        for label in ("before",) + tuple(label for label, _check in CYCLE):
            self.observed[label] = [observation(run.result("observe %s #%d" % (label, index)))
                                    for index in range(len(observers))]
            if label != "before":
                self.results[label] = run.result(label)


def run_cycle(inventory, module, args, workdir, observe=(), env=None, timeout=300):
    """lastgood.rollback.<module> in check mode, for real, in check mode and for real again, in
    one playbook (one start-up instead of four); the `observe` tasks (read-only, builtin
    modules) run before the first step and after each one, so that what check mode and the
    second run changed on the host shows without leaving the playbook.
    """
    tasks = []

    def add_observers(label):
        for index, task in enumerate(observe):
            tasks.append(dict(task, name="observe %s #%d" % (label, index), changed_when=False, check_mode=False))

    add_observers("before")
    for label, check in CYCLE:
        tasks.append({"name": label, "lastgood.rollback.%s" % module: args, "check_mode": check, "diff": True})
        add_observers(label)
    run = run_tasks(inventory, tasks, workdir, env=env, timeout=timeout)
    if run.rc != 0:
        raise AssertionError("%s cycle failed: %s" % (module, run.describe()))
    return CycleRun(run, observe)


# -- inventories -----------------------------------------------------------------------------

def stack_health_checks(stack, timeout_s=2):
    """lastgood_health_checks for a tests/integration/stacks.py stack: its two HTTP services."""
    return [
        {"name": "app-health", "url": stack.url("app", "/health"), "status": [200], "timeout_s": timeout_s},
        {"name": "static", "url": stack.url("static", "/"), "status": [200], "timeout_s": timeout_s},
    ]


def stack_host_vars(stack, backup_root, **extra):
    """The collection's host variables for a stack (project name: what compose picks)."""
    host_vars = {
        "lastgood_project_dir": str(stack.dir),
        "lastgood_backup_root": str(backup_root),
        "lastgood_health_checks": stack_health_checks(stack),
    }
    host_vars.update(extra)
    return host_vars


@contextlib.contextmanager
def stack_host(stack, work, client, **host_vars):
    """`stack` as the host of a module's runs: .stack, .work, .backup_root (under `work`), .root (the
    project's snapshots), .inventory (stack_host_vars + `host_vars`) and .images, images to
    remove at the end. On exit the stack is destroyed, its snapshots' pins and .images removed."""
    work = Path(work)
    backup_root = work / "backups"
    host = types.SimpleNamespace(stack=stack, work=work, backup_root=backup_root, root=backup_root / stack.project,
                                 images=[], inventory=write_inventory(work, stack_host_vars(stack, backup_root, **host_vars)))
    try:
        yield host
    finally:
        stack.destroy()
        remove_snapshot_pins(client, backup_root)
        for image_id in host.images:
            remove_image(client, image_id)


def write_inventory(directory, host_vars, name="inventory.yml"):
    """A one-host inventory (local connection, the venv's Python) written into `directory`."""
    inventory = {"all": {"hosts": {HOST: dict(host_vars, ansible_connection="local",
                                              ansible_python_interpreter=str(PYTHON))}}}
    path = Path(directory) / name
    path.write_text(json.dumps(inventory, indent=2))  # JSON is YAML
    return path


# -- snapshots on disk -----------------------------------------------------------------------

def snapshot_ids(backup_root, project):
    """Snapshot directories of a project, sorted (what the collection lists, less staging dirs)."""
    root = Path(backup_root) / project
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def last_known_good(backup_root, project):
    link = Path(backup_root) / project / "last-known-good"
    return os.readlink(link) if link.is_symlink() else None


def read_manifest(backup_root, project, snapshot_id):
    return json.loads((Path(backup_root) / project / snapshot_id / "manifest.json").read_text())


def rewrite_manifest(snapshot_dir, data, fix_checksum=True):
    """Replace manifest.json with `data` (bytes); recompute manifest.json.sha256 unless told not to."""
    snapshot_dir = Path(snapshot_dir)
    (snapshot_dir / "manifest.json").write_bytes(data)
    if fix_checksum:
        (snapshot_dir / "manifest.json.sha256").write_text(
            "%s  manifest.json\n" % hashlib.sha256(data).hexdigest())


def tree_state(directory):
    """{relative path: sha256 of a file, 'dir', or '-> target' of a symlink} under `directory`."""
    directory = Path(directory)
    state = {}
    if not directory.exists():
        return state
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        if path.is_symlink():
            state[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            state[rel] = "dir"
        else:
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


# -- the engine: throwaway images and what a run may have changed ------------------------------

def throwaway_image(client, base, repository, tag, label, command=None):
    """Build `FROM base` + a unique LABEL (+ CMD `command`, a list) as repository:tag and return
    its ID (sha256:...).

    Its own image ID makes tags a run adds to it (rolled-back-*, lastgood-* pins) this test's
    alone, however many other stacks share `base`.
    """
    dockerfile = "FROM %s\nLABEL lastgood.test=%s\n" % (base, json.dumps(label))
    if command:
        dockerfile += "CMD %s\n" % json.dumps(command)
    image, _logs = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag="%s:%s" % (repository, tag),
                                       rm=True, forcerm=True, pull=False)
    return image.id


class OtherRunLock:
    """The project's lock held by a live process on this host, taken with the collection's own
    acquire_lock, as a deploy started by another controller would hold it.

        with OtherRunLock(backup_root, project) as other:
            ...  # other.pid is the holder's pid
    """

    def __init__(self, backup_root, project, user="ops-other", reason="deploy 4.2"):
        self.root = Path(backup_root) / project
        self.user, self.reason = user, reason
        self.proc = None
        self.holder = None

    @property
    def pid(self):
        return self.proc.pid

    def __enter__(self):
        return self.hold()

    def hold(self):
        if str(REPO_ROOT / ".collections") not in sys.path:
            sys.path.insert(0, str(REPO_ROOT / ".collections"))
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.lastgood.rollback.plugins.module_utils import _orchestrate
        self.proc = subprocess.Popen(["sleep", "300"])
        self.holder = {"host": socket.gethostname(), "pid": self.proc.pid,
                       "pid_start": _orchestrate.process_start_time(self.proc.pid), "user": self.user,
                       "reason": self.reason}
        self.root.mkdir(parents=True, exist_ok=True)
        _orchestrate.acquire_lock(str(self.root), self.holder, 3600, socket.gethostname())
        return self

    def begin(self, kind="rollback", plan=None):
        """The holder's run opens its journal, as rollback_run's begin does; returns its run id.
        Once the holder is gone (release), it is an interrupted run's."""
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.lastgood.rollback.plugins.module_utils import _orchestrate
        journal = _orchestrate.new_journal(kind, self.reason, self.user, plan or {}, self.holder)
        _orchestrate.save_journal(str(self.root), journal)
        return journal["run_id"]

    def release(self):
        """The holder's process ends; its lock file stays, as a crashed run's would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, *exc):
        self.release()
        return False

    def refused(self, message, project):
        """Whether `message` is the one-line refusal naming this holder."""
        return ("nothing changed: another run holds the lock of project %s" % project in message
                and "pid %d" % self.pid in message and self.user in message and self.reason in message
                and "\n" not in message)


def remove_image(client, image_id):
    """Remove an image with every tag it has; absent already is fine."""
    import docker
    try:
        client.images.remove(image_id, force=True, noprune=False)
    except docker.errors.ImageNotFound:
        pass


def image_id_or_none(client, reference):
    import docker
    try:
        return client.api.inspect_image(reference)["Id"]
    except docker.errors.ImageNotFound:
        return None


def image_tags(client, image_id):
    """Sorted tags of an image, [] when the image is gone."""
    import docker
    try:
        return sorted(client.api.inspect_image(image_id).get("RepoTags") or [])
    except docker.errors.ImageNotFound:
        return []


def project_containers(client, project):
    """{container name: (id, image ID, started at)}: a recreated or restarted container shows."""
    found = client.containers.list(all=True, filters={"label": ["com.docker.compose.project=%s" % project]})
    return {c.name: (c.id, c.attrs["Image"], c.attrs["State"]["StartedAt"]) for c in found}


def stack_state(client, stack, backup_root, watched_images=()):
    """Everything a playbook or module run could change for `stack`: its containers, what its
    app reference resolves to, the tags of `watched_images`, and the files under backup_root."""
    return {
        "containers": project_containers(client, stack.project),
        "app_reference": image_id_or_none(client, stack.app_image),
        "tags": {image: image_tags(client, image) for image in watched_images},
        "backups": tree_state(backup_root),
    }


def docker_observers(stack, image_ids=()):
    """Read-only tasks reporting a stack's containers (id, image, state, start time) and, for
    the app reference and `image_ids`, their ID and tags: see parse_docker_observation()."""
    names = ["%s-%s-1" % (stack.project, service) for service in ("app", "db", "static")]
    # Go templates for docker; {% raw %} keeps ansible's Jinja away from them.
    container_format = "{% raw %}{{.Name}} {{.Id}} {{.Image}} {{.State.Status}} {{.State.StartedAt}}{% endraw %}"
    image_format = "{% raw %}{{.Id}} {{json .RepoTags}}{% endraw %}"
    return [
        {"ansible.builtin.command": {"argv": ["docker", "container", "inspect", "--format", container_format] + names},
         "failed_when": False},
        {"ansible.builtin.command": {"argv": ["docker", "image", "inspect", "--format", image_format, stack.app_image]
                                     + list(image_ids)},
         "failed_when": False},
    ]


def parse_docker_observation(observed):
    """{"containers": {name: (id, image ID, status, started at)}, "images": [(ID, sorted tags)]}
    from CycleRun.observed[<step>] of the docker_observers()."""
    containers_result, images_result = observed
    containers = {}
    for line in containers_result["stdout"].splitlines():
        name, container_id, image, status, started = line.split()
        containers[name.lstrip("/")] = (container_id, image, status, started)
    images = []
    for line in images_result["stdout"].splitlines():
        image, _sep, tags = line.partition(" ")
        images.append((image, sorted(json.loads(tags) or [])))
    return {"containers": containers, "images": images}


def remove_snapshot_pins(client, backup_root):
    """Untag the pins (lastgood-... tags) recorded in every manifest under backup_root (test cleanup)."""
    import docker
    for manifest_path in Path(backup_root).glob("*/*/manifest.json"):
        try:
            services = json.loads(manifest_path.read_text()).get("services") or {}
        except ValueError:
            continue
        for entry in services.values():
            pin = isinstance(entry, dict) and entry.get("pin")
            if pin:
                try:
                    client.api.remove_image(pin, noprune=True)
                except docker.errors.APIError:
                    pass
