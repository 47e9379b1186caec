"""The collection as an execution environment gets it: built into a tarball, installed into a
clean collections path, introspected by ansible-builder, and run from there.

The module fixture builds the artifact with `ansible-galaxy collection build` and installs it
with `ansible-galaxy collection install` into an empty directory, from a neutral working
directory (the repository's ansible.cfg would point Ansible at this checkout). Everything
afterwards uses only that directory: ANSIBLE_COLLECTIONS_PATH names it alone, ANSIBLE_CONFIG
an empty configuration, and the working directory is outside the repository.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

try:
    from . import ansible_run, stacks
except ImportError:
    import ansible_run
    import stacks

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"


def requirement_lines(path):
    """The requirement lines of a pip or bindep file, without comments and blank lines."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


class Installed:
    """The collection installed from its tarball into a clean collections path."""

    def __init__(self, work):
        self.work = work
        self.collections = work / "collections"
        self.config = work / "ansible.cfg"
        self.config.write_text("[defaults]\nretry_files_enabled = false\n")
        built = stacks.run([VENV_BIN / "ansible-galaxy", "collection", "build", "--output-path", work, REPO_ROOT],
                           cwd=work, env=self.env(), timeout=300)
        tarballs = sorted(work.glob("lastgood-rollback-*.tar.gz"))
        assert len(tarballs) == 1, built.stdout
        self.tarball = tarballs[0]
        stacks.run([VENV_BIN / "ansible-galaxy", "collection", "install", "-p", self.collections, self.tarball],
                   cwd=work, env=self.env(), timeout=300)
        self.root = self.collections / "ansible_collections" / "lastgood" / "rollback"

    def env(self, extra=None):
        env = {key: value for key, value in stacks.clean_env().items() if not key.startswith("ANSIBLE_")}
        env.update({"ANSIBLE_CONFIG": str(self.config), "ANSIBLE_COLLECTIONS_PATH": str(self.collections),
                    "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false", "ANSIBLE_NOCOLOR": "1",
                    "PYTHONDONTWRITEBYTECODE": "1"})
        env.update(extra or {})
        return env

    def playbook(self, name, inventory, check=False):
        """Run the installed collection's playbook by its name, lastgood.rollback.<name>."""
        args = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "lastgood.rollback.%s" % name]
        if check:
            args.append("--check")
        env = self.env({"ANSIBLE_STDOUT_CALLBACK": ansible_run.CALLBACK_NAME,
                        "ANSIBLE_CALLBACK_PLUGINS": ansible_run._callback_dir()})  # pylint: disable=protected-access
        proc = stacks.run(args, cwd=self.work, env=env, check=False, timeout=300)
        return ansible_run.AnsibleRun(args, proc.returncode, proc.stdout, proc.stderr, 0.0)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return Installed(tmp_path_factory.mktemp("ee"))


def test_the_installed_collection_is_the_only_one_ansible_finds(installed):
    listed = stacks.run([VENV_BIN / "ansible-galaxy", "collection", "list", "lastgood.rollback", "--format", "json"],
                        cwd=installed.work, env=installed.env())
    paths = json.loads(listed.stdout)
    assert list(paths) == [str(installed.collections / "ansible_collections")], paths
    manifest = json.loads((installed.root / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["version"]


def test_the_artifact_ships_the_ee_metadata_and_the_awx_data(installed):
    for relative in ("meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt",
                     "awx/job_templates.yml", "awx/workflows.yml"):
        assert (installed.root / relative).is_file(), relative


def test_ansible_builder_introspect_lists_the_requirements(installed):
    """What an EE build installs for this collection: ansible-builder's own introspection."""
    pip_out, bindep_out = installed.work / "pip.txt", installed.work / "bindep.txt"
    proc = stacks.run([VENV_BIN / "ansible-builder", "introspect", "--sanitize", "--write-pip", pip_out,
                       "--write-bindep", bindep_out, installed.collections], cwd=installed.work, env=installed.env())
    tag = "# from collection lastgood.rollback"
    expected_python = requirement_lines(REPO_ROOT / "meta" / "ee-requirements.txt")
    expected_system = requirement_lines(REPO_ROOT / "meta" / "ee-bindep.txt")
    assert requirement_lines(pip_out) == ["%s  %s" % (line, tag) for line in expected_python], proc.stdout
    assert requirement_lines(bindep_out) == ["%s  %s" % (line, tag) for line in expected_system], proc.stdout
    # The EE needs what the modules run: docker with compose, the PostgreSQL client, git.
    names = {re.split(r"[\s\[]", line)[0] for line in expected_system}
    assert {"docker.io", "postgresql-client", "git"} <= names and {"docker-ce-cli", "postgresql", "git-core"} <= names
    assert {re.split(r"[<>=!~ ]", line)[0] for line in expected_python} == {"docker", "psycopg2-binary", "jmespath"}


def test_ee_python_requirements_match_the_managed_host_requirements():
    """meta/ee-requirements.txt and requirements.txt must not drift apart."""
    assert requirement_lines(REPO_ROOT / "meta" / "ee-requirements.txt") == requirement_lines(REPO_ROOT / "requirements.txt")


def test_playbooks_run_from_the_installed_collection(installed, stack, docker_client, tmp_path):
    """snapshot, verify and a rollback plan, by FQCN, from the tarball's install, on a real stack."""
    with ansible_run.stack_host(stack(), tmp_path, docker_client) as host:
        snapshot = installed.playbook("snapshot", host.inventory)
        assert snapshot.rc == 0, snapshot.describe()
        snapshot_id = snapshot.outcome()["snapshot_id"]
        assert ansible_run.last_known_good(host.backup_root, host.stack.project) == snapshot_id
        verify = installed.playbook("verify", host.inventory)
        assert verify.rc == 0, verify.describe()
        assert verify.outcome()["result"] == "success" and verify.outcome()["snapshot_id"] == snapshot_id
        plan = installed.playbook("rollback_images", host.inventory, check=True)
        assert plan.rc == 0, plan.describe()
        assert plan.outcome()["result"] == "planned" and plan.outcome()["services_changed"] == []
