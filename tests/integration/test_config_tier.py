# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tier 1 (configuration): playbooks/rollback_config.yml and config_restore against the real engine.

The scenario: snapshot a healthy demo stack, deploy a bad configuration (.env moves APP_PORT,
which breaks the app for its clients, and compose.yaml gains a service `extra`), then
`--check --diff`, the rollback, a second rollback and `--check` again. The faults (a damaged
snapshot copy, a configuration `docker compose config` rejects, nginx -t rejecting, a
certificate that does not match its key) must each be refused with one line and change nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

try:
    from . import ansible_run, config_support, stacks
except ImportError:
    import ansible_run
    import config_support
    import stacks

EXTRA_SERVICE = """
  extra:
    image: lastgood-bench/busybox:1
    network_mode: none
    command: ["sleep", "3600"]
    stop_grace_period: 1s
"""


def file_tree(directory):
    return ansible_run.tree_state(directory)


class Scenario(ansible_run.PlaybookScenario):
    def state(self):
        return {
            "containers": ansible_run.project_containers(self.client, self.stack.project),
            "project": {rel: digest for rel, digest in file_tree(self.stack.dir).items() if not rel.startswith(".git")},
            "backups": file_tree(self.backup_root),
        }


@pytest.fixture(scope="module")
def config_stacks(demo_images, docker_client, tmp_path_factory):
    parent = tmp_path_factory.mktemp("cfgstacks")
    created = []

    def factory(**kwargs):
        stack = config_support.ConfigStack.create(parent, docker_client, **kwargs)
        created.append(stack)
        return stack

    yield factory
    for stack in reversed(created):
        stack.destroy()


@pytest.fixture(scope="module")
def scenario(config_stacks, docker_client, tmp_path_factory):
    stack = config_stacks()
    scenario = Scenario(stack, docker_client, tmp_path_factory.mktemp("config"))
    try:
        snapshot = scenario.step("snapshot", "snapshot")
        assert snapshot.rc == 0, snapshot.describe()
        scenario.snapshot_id = snapshot.outcome()["snapshot_id"]
        scenario.good_env = (stack.dir / ".env").read_bytes()
        scenario.good_compose = (stack.dir / "compose.yaml").read_bytes()

        # The bad deploy: one .env value breaks the app for its clients; a new service appears.
        scenario.bad_port = stacks.free_port()
        stack.set_env(APP_PORT=scenario.bad_port)
        scenario.bad_env = (stack.dir / ".env").read_bytes()
        compose = stack.dir / "compose.yaml"
        compose.write_text(compose.read_text().replace("\nvolumes:\n", EXTRA_SERVICE + "\nvolumes:\n"))
        stack.compose("up", "-d", "--wait", "--wait-timeout", "60")
        assert not _answers(stack), "the app still answers on its old port"
        scenario.states["deployed"] = scenario.state()

        scenario.step("check", "rollback_config", check=True, extra_vars={"ansible_diff_mode": True})
        scenario.step("rollback", "rollback_config")
        scenario.health = {service: stack.health(service) for service in ("app", "db", "static")}
        scenario.step("again", "rollback_config", extra_vars={"lastgood_snapshot_id": scenario.snapshot_id})
        scenario.step("check again", "rollback_config", check=True)
        yield scenario
    finally:
        ansible_run.remove_snapshot_pins(docker_client, scenario.backup_root)


def _answers(stack):
    try:
        stack.get("app", "/health", timeout=0.5)
        return True
    except OSError:
        return False


def succeeded(scenario, label):
    run = scenario.runs[label]
    assert run.rc == 0, run.describe()
    assert run.recap["failures"] == 0
    return run


def restore_result(run):
    [result] = run.results_of_module("lastgood.rollback.config_restore")
    return result


def container(state, project, service):
    return state["containers"].get("%s-%s-1" % (project, service))


def test_check_mode_plans_the_rollback_and_changes_nothing(scenario):
    run = succeeded(scenario, "check")
    assert scenario.states["check"] == scenario.states["deployed"]
    result = restore_result(run)
    assert result["files_restored"] == [".env", "compose.yaml"]
    assert result["services_recreated"] == ["app"]
    assert result["orphans_removed"] == ["extra"]
    assert result["files"][".env"]["changed_keys"] == ["APP_PORT"]
    outcome = run.outcome()
    assert outcome["tier"] == "config"
    assert outcome["result"] == "planned" and outcome["check_mode"] is True
    assert outcome["services_changed"] == ["app", "extra"]


def test_the_diff_names_env_keys_but_never_their_values(scenario):
    run = scenario.runs["check"]
    result = restore_result(run)
    env_diff = [d for d in result["diff"] if d["before_header"].startswith(".env")]
    assert len(env_diff) == 1
    assert "APP_PORT=********" in env_diff[0]["before"] and "APP_PORT=********" in env_diff[0]["after"]
    compose_diff = [d for d in result["diff"] if d["before_header"].startswith("compose.yaml")]
    assert "extra:" in compose_diff[0]["before"] and "extra:" not in compose_diff[0]["after"]
    for label in ("check", "rollback", "again"):
        output = scenario.runs[label].stdout + scenario.runs[label].stderr
        assert scenario.stack.password not in output, label
        assert "APP_PORT=%d" % scenario.bad_port not in output, label
        # As a number of its own: a sha256 in the output may hold the same digits (it did: ...ae03521633a6...).
        assert not re.search(r"\b%d\b" % scenario.bad_port, output), label


def test_the_files_are_back_and_only_the_broken_service_is_recreated(scenario):
    run = succeeded(scenario, "rollback")
    stack = scenario.stack
    assert (stack.dir / ".env").read_bytes() == scenario.good_env
    assert (stack.dir / "compose.yaml").read_bytes() == scenario.good_compose
    assert oct((stack.dir / ".env").stat().st_mode & 0o777) == "0o600"
    before, after = scenario.states["deployed"], scenario.states["rollback"]
    project = stack.project
    assert container(after, project, "app")[0] != container(before, project, "app")[0]
    for service in ("db", "static"):
        assert container(after, project, service) == container(before, project, service), service
    assert container(after, project, "extra") is None
    result = restore_result(run)
    assert result["services_recreated"] == ["app"]
    assert result["orphans_removed"] == ["extra"]
    assert stack.get("app", "/health")[0] == 200


def test_the_replaced_files_are_kept_in_the_rollback_record(scenario):
    result = restore_result(succeeded(scenario, "rollback"))
    record = Path(result["record_dir"])
    snapshot_dir = scenario.backup_root / scenario.stack.project / scenario.snapshot_id
    assert record.parent == snapshot_dir / "rollbacks"
    assert (record / "files" / ".env").read_bytes() == scenario.bad_env
    document = json.loads((record / "record.json").read_text())
    assert document["snapshot_id"] == scenario.snapshot_id
    assert sorted(document["files"]) == [".env", "compose.yaml"]

    assert document["files"][".env"]["sha256"] == hashlib.sha256(scenario.bad_env).hexdigest()
    assert document["files"][".env"]["restored_sha256"] == hashlib.sha256(scenario.good_env).hexdigest()


def test_the_gate_passes_and_the_outcome_is_published(scenario):
    run = succeeded(scenario, "rollback")
    assert scenario.health == {"app": "healthy", "db": "healthy", "static": "healthy"}
    gate = [r for r in run.results_of_module("lastgood.rollback.health_check") if r.get("healthy") is not None]
    assert [r["healthy"] for r in gate] == [True]
    outcome = run.outcome()
    assert outcome["tier"] == "config" and outcome["result"] == "success" and outcome["healthy"] is True
    assert outcome["snapshot_id"] == scenario.snapshot_id
    assert outcome["services_changed"] == ["app", "extra"]
    assert outcome["files_restored"] == [".env", "compose.yaml"]


def test_a_second_run_and_check_mode_change_nothing(scenario):
    run = succeeded(scenario, "again")
    assert run.recap["changed"] == 0, [(name, r) for name, r in run.task_results() if r.get("changed")]
    assert scenario.states["again"] == scenario.states["rollback"]
    assert run.outcome()["services_changed"] == []
    run = succeeded(scenario, "check again")
    assert run.recap["changed"] == 0
    assert scenario.states["check again"] == scenario.states["again"]


def test_role_for_an_orchestrator_sets_the_result_fact(scenario, tmp_path):
    tasks = [
        {"name": "tier 1", "ansible.builtin.include_role": {"name": "lastgood.rollback.rollback_config"},
         "vars": {"rollback_config_report": False}},
        {"name": "show", "ansible.builtin.debug": {"var": "rollback_config_result"}},
    ]
    run = ansible_run.run_tasks(scenario.inventory, tasks, tmp_path)
    assert run.rc == 0, run.describe()
    fact = run.result("show")["rollback_config_result"]
    assert fact["changed"] is False and fact["healthy"] is True and fact["services_changed"] == []
    assert fact["snapshot_id"] == scenario.snapshot_id and fact["project_name"] == scenario.stack.project
    assert isinstance(fact["summary_lines"], list)
    assert "lastgood_outcome" not in run.global_custom_stats


@pytest.mark.parametrize("linked", [False, True], ids=["file", "link"])
def test_an_override_file_compose_adds_is_recorded_and_put_back(config_stacks, docker_client, tmp_path, linked):
    """compose reads compose.override.yaml by itself: a snapshot records it as one of the compose
    files (a link by the file it links to), and when a bad one moves the app's port, the config
    tier validates and puts the recorded one back."""
    stack = config_stacks(up=False)
    override = stack.dir / "compose.override.yaml"
    recorded = "compose.override.yaml"
    if linked:
        recorded = "envs/override.yaml"
        (stack.dir / "envs").mkdir()
        override.symlink_to(recorded)
    good = "services:\n  app:\n    labels:\n      lastgood.test.release: good\n"
    override.write_text(good)
    stack.up()
    scenario = Scenario(stack, docker_client, tmp_path)
    try:
        snapshot = scenario.step("snapshot", "snapshot")
        assert snapshot.rc == 0, snapshot.describe()
        snapshot_id = snapshot.outcome()["snapshot_id"]
        manifest = json.loads((scenario.backup_root / stack.project / snapshot_id / "manifest.json").read_text())
        assert manifest["project"]["compose_files"] == ["compose.yaml", recorded]
        assert recorded in manifest["files"]

        override.write_text("services:\n  app:\n    environment:\n      APP_PORT: '%d'\n" % stacks.free_port())
        stack.compose("up", "-d")
        assert not _answers(stack), "the app still answers on its old port"
        run = scenario.step("rollback", "rollback_config")
        assert run.rc == 0, run.describe()
        assert override.read_text() == good and override.is_symlink() is linked
        assert restore_result(run)["services_recreated"] == ["app"]
        assert run.outcome()["files_restored"] == [recorded]
        assert stack.get("app", "/health")[0] == 200
        assert stack.health("app") == "healthy"
    finally:
        ansible_run.remove_snapshot_pins(docker_client, scenario.backup_root)


def test_an_override_linking_outside_the_project_is_used_not_recorded(config_stacks, docker_client, tmp_path):
    """Host configuration kept elsewhere: the snapshot says it does not record it, and a restore
    validates and starts the stack with it as it is, or without it once it is gone."""
    stack = config_stacks(up=False)
    outside = tmp_path / "host-override.yaml"
    outside.write_text("services:\n  app:\n    labels:\n      lastgood.test.release: host\n")
    (stack.dir / "compose.override.yaml").symlink_to(outside)
    stack.up()
    (tmp_path / "work").mkdir()
    scenario = Scenario(stack, docker_client, tmp_path / "work")
    try:
        snapshot = scenario.step("snapshot", "snapshot")
        assert snapshot.rc == 0, snapshot.describe()
        [created] = snapshot.results_of_module("lastgood.rollback.snapshot_create")
        assert any("compose.override.yaml links outside the project directory" in warning
                   for warning in created.get("warnings", [])), created.get("warnings")
        snapshot_id = snapshot.outcome()["snapshot_id"]
        manifest = json.loads((scenario.backup_root / stack.project / snapshot_id / "manifest.json").read_text())
        assert manifest["project"]["compose_files"] == ["compose.yaml", "compose.override.yaml"]
        assert "compose.override.yaml" not in manifest["files"]

        before = stack.container("app").id
        stack.set_env(APP_EXTRA_LATENCY_MS=5)
        stack.compose("up", "-d", "--wait", "--wait-timeout", "60")
        run = scenario.step("rollback", "rollback_config")
        assert run.rc == 0, run.describe()
        assert run.outcome()["files_restored"] == [".env"]
        app = stack.container("app")
        assert app.id != before and app.labels["lastgood.test.release"] == "host"
        assert stack.health("app") == "healthy"

        # Gone from the host (a code rollback stashes an untracked override): left out, as compose does.
        (stack.dir / "compose.override.yaml").unlink()
        stack.set_env(APP_EXTRA_LATENCY_MS=6)
        run = scenario.step("without", "rollback_config")
        assert run.rc == 0, run.describe()
        [restored] = run.results_of_module("lastgood.rollback.config_restore")
        assert any("compose file compose.override.yaml is neither recorded" in warning
                   for warning in restored.get("warnings", [])), restored.get("warnings")
        assert "lastgood.test.release" not in stack.container("app").labels
        assert stack.health("app") == "healthy"
    finally:
        ansible_run.remove_snapshot_pins(docker_client, scenario.backup_root)


# -- faults: refused with one line, nothing changed ---------------------------------------------

def break_env(scenario):
    scenario.stack.set_env(APP_EXTRA_LATENCY_MS=5)
    return scenario.state()


def test_a_damaged_snapshot_copy_is_refused(scenario, tmp_path):
    snapshot_dir, _manifest = config_support.copy_snapshot(
        scenario.backup_root, scenario.stack.project, scenario.snapshot_id, "20991231T000000Z-damaged")
    config_support.replace_snapshot_file(snapshot_dir, ".env", b"APP_PORT=1\n", fix_checksum=False)
    before = break_env(scenario)
    run = ansible_run.run_playbook("rollback_config", scenario.inventory,
                                   extra_vars={"lastgood_snapshot_id": snapshot_dir.name})
    assert run.rc != 0
    message = run.failure_msg()
    assert "do not match their sha256: .env" in message and "\n" not in message
    assert scenario.state() == before
    assert run.outcome()["result"] == "failed"


def test_a_configuration_compose_rejects_is_refused(scenario, tmp_path):
    snapshot_dir, _manifest = config_support.copy_snapshot(
        scenario.backup_root, scenario.stack.project, scenario.snapshot_id, "20991231T000000Z-invalid")
    broken = scenario.good_compose.decode().replace("network_mode: host", "network_mode: [not, a, string]", 1)
    config_support.replace_snapshot_file(snapshot_dir, "compose.yaml", broken)
    before = scenario.state()
    result = ansible_run.run_module(scenario.inventory, "config_restore", {
        "project_dir": str(scenario.stack.dir), "backup_root": str(scenario.backup_root),
        "snapshot_id": snapshot_dir.name}, tmp_path).result()
    assert result.get("failed"), result
    assert result["msg"].startswith("nothing changed: docker compose config rejects the snapshot's configuration")
    assert scenario.state() == before


# -- nginx and TLS validators on a small nginx project ------------------------------------------

@pytest.fixture(scope="module")
def nginx_project(demo_images, docker_client, tmp_path_factory):
    work = tmp_path_factory.mktemp("nginx")
    port = stacks.free_port()
    directory = config_support.create_nginx_project(work, port)
    inventory = ansible_run.write_inventory(work, {"lastgood_project_dir": str(directory),
                                                   "lastgood_backup_root": str(work / "backups")})
    env = stacks.clean_env()
    try:
        stacks.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", "60"], cwd=directory, env=env)
        snap = ansible_run.run_module(inventory, "snapshot_create", {
            "project_dir": str(directory), "backup_root": str(work / "backups"), "pin_images": False,
            "config_files": ["nginx/*.conf", "certs/*"]}, work).result()
        assert not snap.get("failed"), snap
        mark = ansible_run.run_module(inventory, "snapshot_mark", {
            "project_dir": str(directory), "backup_root": str(work / "backups"),
            "snapshot_id": snap["snapshot_id"]}, work).result()
        assert not mark.get("failed"), mark
        yield {"dir": directory, "port": port, "inventory": inventory, "work": work, "backups": work / "backups",
               "snapshot_id": snap["snapshot_id"], "project": directory.name}
    finally:
        stacks.run(["docker", "compose", "down", "--timeout", "2"], cwd=directory, env=env, check=False)


def nginx_args(project, **extra):
    args = {"project_dir": str(project["dir"]), "backup_root": str(project["backups"]), "nginx_services": ["web"],
            "tls_pairs": [{"cert": "certs/site.crt", "key": "certs/site.key"}]}
    args.update(extra)
    return args


def web_container(client, project):
    [found] = client.containers.list(all=True, filters={"label": ["com.docker.compose.project=%s" % project["project"]]})
    return found.id


def test_nginx_t_rejecting_the_restored_configuration_refuses_it(nginx_project, docker_client, tmp_path):
    snapshot_dir, _manifest = config_support.copy_snapshot(
        nginx_project["backups"], nginx_project["project"], nginx_project["snapshot_id"], "20991231T000000Z-nginx")
    config_support.replace_snapshot_file(snapshot_dir, "nginx/nginx.conf", "events {}\nhttp { server { listen; } }\n")
    live = nginx_project["dir"] / "nginx" / "nginx.conf"
    live.write_text(config_support.nginx_conf(nginx_project["port"], answer="changed"))
    before = (file_tree(nginx_project["dir"]), web_container(docker_client, nginx_project))
    result = ansible_run.run_module(nginx_project["inventory"], "config_restore",
                                    nginx_args(nginx_project, snapshot_id=snapshot_dir.name), tmp_path).result()
    assert result.get("failed"), result
    assert result["msg"].startswith("nothing changed: nginx -t in service web rejects the restored configuration"), result["msg"]
    assert "listen" in result["msg"]
    assert (file_tree(nginx_project["dir"]), web_container(docker_client, nginx_project)) == before


def test_a_certificate_that_does_not_match_its_key_is_refused(nginx_project, docker_client, tmp_path):
    snapshot_dir, _manifest = config_support.copy_snapshot(
        nginx_project["backups"], nginx_project["project"], nginx_project["snapshot_id"], "20991231T000000Z-tls")
    config_support.replace_snapshot_file(snapshot_dir, "certs/site.key", config_support.other_key())
    before = (file_tree(nginx_project["dir"]), web_container(docker_client, nginx_project))
    result = ansible_run.run_module(nginx_project["inventory"], "config_restore",
                                    nginx_args(nginx_project, snapshot_id=snapshot_dir.name), tmp_path).result()
    assert result.get("failed"), result
    assert result["msg"] == ("nothing changed: TLS pair certs/site.crt / certs/site.key of the restored configuration: "
                             "the certificate does not belong to the key")
    assert (file_tree(nginx_project["dir"]), web_container(docker_client, nginx_project)) == before


def test_a_valid_nginx_configuration_is_restored_and_its_service_recreated(nginx_project, docker_client, tmp_path):
    live = nginx_project["dir"] / "nginx" / "nginx.conf"
    live.write_text(config_support.nginx_conf(nginx_project["port"], answer="changed"))
    before = web_container(docker_client, nginx_project)
    run = ansible_run.run_module(nginx_project["inventory"], "config_restore", nginx_args(nginx_project), tmp_path)
    result = run.result()
    assert not result.get("failed"), result
    assert result["files_restored"] == ["nginx/nginx.conf"]
    # The file is bind-mounted: its hash label cannot change, but only a new container reads it.
    assert result["services_recreated"] == ["web"]
    assert any(line.startswith("validated nginx configuration of web") for line in result["actions"])
    assert any(line.startswith("validated TLS pair") for line in result["actions"])
    assert web_container(docker_client, nginx_project) != before
    status, body = stacks.wait_until(lambda: _get(nginx_project["port"]), 20, message="nginx answers")
    assert (status, body.strip()) == (200, "ok")
    again = ansible_run.run_module(nginx_project["inventory"], "config_restore", nginx_args(nginx_project), tmp_path).result()
    assert again["changed"] is False and again["services_recreated"] == []


def _get(port):
    try:
        return stacks.http_get("http://127.0.0.1:%d/" % port, timeout=1)
    except OSError:
        return None
