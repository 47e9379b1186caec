"""The security-breach procedure: host isolation, secret rotation, and the playbook end to end.

Isolation is tested on disposable network namespaces only (breach_support.Netns): the
module's ``netns`` option points it at the namespace the test created, which plays the
isolated host; the machine running the tests is never touched (test_machine_rules_untouched
proves it). Secret rotation runs against a real PostgreSQL server (pg_server.PgServer) and
the demo stack's .env.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import breach_support as bs  # noqa: E402
import pg_server  # noqa: E402

ISOLATED = {"admin->ssh": "ok", "admin->other_port": "timeout", "other->ssh": "timeout", "host->outbound": "timeout"}


def _rules(text):
    """iptables-save output without its timestamped comment lines."""
    return [line for line in text.splitlines() if not line.startswith("#")]


def _machine_rules():
    return {tool: _rules(bs.sh([tool]).stdout) for tool in ("iptables-save", "ip6tables-save")}


@pytest.fixture(scope="module")
def machine_rules():
    """The machine's own rules before any test here (compared again after each test)."""
    return _machine_rules()


@pytest.fixture
def hosts(machine_rules):
    """Three disposable namespaces with servers: ssh and another port on the host, one on the admin side."""
    netns = bs.Netns.create()
    try:
        netns.serve(netns.host, bs.SSH_PORT)
        netns.serve(netns.host, bs.OTHER_PORT)
        netns.serve(netns.admin, bs.OUTBOUND_PORT)
        yield netns
    finally:
        netns.destroy()
        # The machine's own rules are what they were.
        assert _machine_rules() == machine_rules


def isolate(hosts, state_dir, check=False, **extra):
    args = dict(netns=hosts.host, state_dir=str(state_dir), admin_cidrs=[hosts.admin_cidr], ssh_port=bs.SSH_PORT,
                revert_after_s=120)
    args.update(extra)
    return bs.run_module_direct("host_isolation", args, check=check)


def isolation(hosts, state_dir, state, check=False):
    return bs.run_module_direct("host_isolation", dict(netns=hosts.host, state_dir=str(state_dir), state=state), check=check)


# -- isolation --------------------------------------------------------------------------------

def test_isolate_keeps_admin_path_and_refuses_every_other(hosts, tmp_path):
    assert hosts.paths() == bs.OPEN

    planned = isolate(hosts, tmp_path, check=True)
    assert planned["changed"] and not planned.get("failed"), planned
    assert hosts.paths() == bs.OPEN, "check mode changed the rules"
    assert "-A LASTGOOD_ISO_IN -s %s -p tcp -m tcp --dport %d -j ACCEPT" % (hosts.admin_cidr, bs.SSH_PORT) \
        in planned["rules"]["ipv4"]

    started = time.monotonic()
    done = isolate(hosts, tmp_path)
    elapsed = time.monotonic() - started
    assert done["changed"] and done["isolation"]["isolated"] and done["isolation"]["timer_pending"], done
    assert done["diff"]["after"]["isolated"] is True and done["diff"]["before"]["isolated"] is False
    assert elapsed < 5, "isolation took %.2f s" % elapsed
    assert hosts.paths() == ISOLATED
    # Loopback inside the isolated host still works.
    assert hosts.connect(hosts.host, "127.0.0.1", bs.OTHER_PORT) == "ok"
    # IPv6 is closed as well.
    assert "-A LASTGOOD_ISO_IN -j DROP" in hosts.iptables_save(6)
    # The rules found before were saved.
    assert [Path(p).name for p in done["saved_rules"]] == ["rules-before-isolation.v4", "rules-before-isolation.v6"]
    assert "LASTGOOD" not in Path(done["saved_rules"][0]).read_text()

    again_check = isolate(hosts, tmp_path, check=True)
    again = isolate(hosts, tmp_path)
    assert not again_check["changed"] and not again["changed"]
    assert again["isolation"]["timer_pending"], "a second run must not stop the timer"

    lifted = bs.run_module_direct("host_isolation", dict(netns=hosts.host, state_dir=str(tmp_path), state="lift"))
    assert lifted["changed"] and not lifted["isolation"]["isolated"] and not lifted["isolation"]["timer_pending"]
    assert hosts.paths() == bs.OPEN
    assert "LASTGOOD" not in hosts.iptables_save(4) + hosts.iptables_save(6)
    assert not isolation(hosts, tmp_path, "lift")["changed"]


def test_revert_timer_restores_connectivity_unless_confirmed(hosts, tmp_path):
    done = isolate(hosts, tmp_path, revert_after_s=3)
    assert done["isolation"]["timer_pending"] and done["isolation"]["revert_at"]
    assert hosts.paths()["other->ssh"] == "timeout"
    bs.wait_for(lambda: hosts.paths(timeout=0.3) == bs.OPEN, timeout=15, message="the revert timer restored the paths")
    status = isolation(hosts, tmp_path, "status")
    assert not status["isolation"]["isolated"] and status["isolation"]["reverted_at"], status
    assert "LASTGOOD" not in hosts.iptables_save(4)
    refused = isolation(hosts, tmp_path, "confirm")
    assert refused["failed"] and "revert timer already removed the isolation" in refused["msg"], refused


def test_confirm_keeps_isolation_past_the_timer(hosts, tmp_path):
    done = isolate(hosts, tmp_path, revert_after_s=3)
    pid = json.loads((tmp_path / "isolation.json").read_text())["timer"]["pid"]
    planned = isolation(hosts, tmp_path, "confirm", check=True)
    assert planned["changed"] and os.path.exists("/proc/%d" % pid)
    confirmed = isolation(hosts, tmp_path, "confirm")
    assert confirmed["changed"] and confirmed["isolation"]["confirmed_at"] and not confirmed["isolation"]["timer_pending"]
    assert not isolation(hosts, tmp_path, "confirm")["changed"]
    # The timer process is gone (killed, reaped by init), so nothing can revert; still isolated past its deadline.
    bs.wait_for(lambda: not _runs_timer(pid), timeout=5, message="the timer process ended")
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert hosts.paths(timeout=0.3) == ISOLATED
    assert not (tmp_path / "isolation-reverted.json").exists()
    assert done["isolation"]["revert_at"]
    isolation(hosts, tmp_path, "lift")


def _runs_timer(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return b"reverted_at" in handle.read()
    except OSError:
        return False


def test_changing_admin_cidrs_updates_rules(hosts, tmp_path):
    isolate(hosts, tmp_path, admin_cidrs=["%s/32" % hosts.other_ip])
    paths = hosts.paths()
    assert paths["other->ssh"] == "ok" and paths["admin->ssh"] == "timeout"
    moved = isolate(hosts, tmp_path)
    assert moved["changed"] and moved["isolation"]["admin_cidrs"] == [hosts.admin_cidr]
    assert hosts.paths() == ISOLATED
    assert hosts.iptables_save(4).count("-j LASTGOOD_ISO_IN") == 1
    isolation(hosts, tmp_path, "lift")


@pytest.mark.parametrize("cidrs, message", [
    ([], "lastgood_breach_admin_cidrs is empty"),
    (["10.0.0.300/32"], "is not an IPv4 or IPv6 network"),
    (["bastion"], "is not an IPv4 or IPv6 network"),
    (["0.0.0.0/0"], "admits every address"),
])
def test_bad_admin_cidrs_refused_before_any_rule(hosts, tmp_path, cidrs, message):
    before = _rules(hosts.iptables_save(4))
    result = isolate(hosts, tmp_path, admin_cidrs=cidrs)
    assert result["failed"] and message in result["msg"] and not result["changed"], result
    assert _rules(hosts.iptables_save(4)) == before
    assert hosts.paths() == bs.OPEN
    assert not (tmp_path / "isolation.json").exists()


def test_missing_namespace_refused(tmp_path):
    result = bs.run_module_direct("host_isolation", dict(netns="lgbreach-none-host", state_dir=str(tmp_path),
                                                         admin_cidrs=["192.0.2.1/32"]))
    assert result["failed"] and "does not exist" in result["msg"]


# -- secret rotation --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    with pg_server.PgServer.started() as server:
        yield server


def _project(tmp_path, pg, app_password):
    project = tmp_path / "project"
    (project / "secrets").mkdir(parents=True)
    env = project / ".env"
    env.write_text("# settings\nAPP_PORT=18080\nSESSION_SECRET=old-session-secret\nexport API_TOKEN='old-api-token'\n"
                   "POSTGRES_PASSWORD=%s\nAPP_DB_PASSWORD=%s\n" % (pg.password, app_password))
    env.chmod(0o640)
    (project / "secrets" / "jwt.key").write_text("old-jwt-key\n")
    return project


def _can_login(pg, user, password):
    try:
        psycopg2.connect(host=pg.host, port=pg.port, user=user, password=password, dbname="postgres", connect_timeout=5).close()
        return True
    except psycopg2.OperationalError:
        return False


def test_rotation_replaces_secrets_and_old_passwords_stop_working(pg, tmp_path):
    role = "app_%s" % os.urandom(3).hex()
    app_password = "old-app-" + os.urandom(6).hex()
    pg.sql('CREATE ROLE "%s" LOGIN PASSWORD %%s' % role, (app_password,))
    pg.sql("CREATE TABLE IF NOT EXISTS users_%s (name text, must_reset boolean DEFAULT false)" % role)
    pg.sql("INSERT INTO users_%s (name) VALUES ('ann'), ('bob'), ('cy')" % role)
    old_admin = pg.password
    project = _project(tmp_path, pg, app_password)
    env_before = (project / ".env").read_text()
    args = dict(
        project_dir=str(project), env_keys=["SESSION_SECRET", "API_TOKEN"], files=["secrets/jwt.key"],
        database_roles=[{"role": "postgres", "env_key": "POSTGRES_PASSWORD"}, {"role": role, "env_key": "APP_DB_PASSWORD"}],
        db_port=pg.port, db_password_env_key="POSTGRES_PASSWORD",
        reset_sql="UPDATE users_%s SET must_reset = true" % role, marker=str(tmp_path / "rotated.json"),
    )
    try:
        with pg_server.CmdlineSampler(app_password, programs=()) as sampler:
            planned = bs.run_module_direct("secret_rotate", args, check=True)
            assert planned["changed"] and not planned.get("failed"), planned
            assert (project / ".env").read_text() == env_before
            assert _can_login(pg, role, app_password)

            done = bs.run_module_direct("secret_rotate", args)
        assert done["changed"] and not done.get("failed"), done
        assert done["rotated"] == {"env_keys": ["API_TOKEN", "APP_DB_PASSWORD", "POSTGRES_PASSWORD", "SESSION_SECRET"],
                                   "files": ["secrets/jwt.key"], "roles": ["postgres", role]}
        env_after = (project / ".env").read_text()
        new = {line.split("=", 1)[0].replace("export ", ""): line.split("=", 1)[1]
               for line in env_after.splitlines() if "=" in line}
        pg.password = new["POSTGRES_PASSWORD"]  # the tests' own connections from here on
        assert done["password_reset_rows"] == 3
        assert pg.sql("SELECT count(*) FROM users_%s WHERE must_reset" % role) == [(3,)]
        assert env_after.splitlines()[0] == "# settings" and new["APP_PORT"] == "18080"
        assert env_after.splitlines()[3].startswith("export API_TOKEN=")
        assert (project / ".env").stat().st_mode & 0o777 == 0o640
        for key, old in (("SESSION_SECRET", "old-session-secret"), ("API_TOKEN", "'old-api-token'"),
                         ("POSTGRES_PASSWORD", old_admin), ("APP_DB_PASSWORD", app_password)):
            assert new[key] != old and len(new[key]) >= 40
        assert (project / "secrets" / "jwt.key").read_text() not in ("old-jwt-key\n",)
        assert (project / "secrets" / "jwt.key").read_text().endswith("\n")

        # The old passwords no longer authenticate, the new ones do.
        assert not _can_login(pg, role, app_password) and _can_login(pg, role, new["APP_DB_PASSWORD"])
        assert not _can_login(pg, "postgres", old_admin) and _can_login(pg, "postgres", new["POSTGRES_PASSWORD"])

        # No value, old or new, in the results or any leftover file; none on a command line.
        output = done["_stdout"] + done["_stderr"] + planned["_stdout"]
        for value in list(new.values()) + ["old-session-secret", "old-api-token", app_password, old_admin, "old-jwt-key"]:
            if value not in ("18080",):
                assert value not in output
        assert not sampler.leaks
        assert sorted(p.name for p in project.iterdir()) == [".env", "secrets"]
        marker = json.loads((tmp_path / "rotated.json").read_text())
        assert marker["roles"] == ["postgres", role] and "old" not in json.dumps(marker)

        again = bs.run_module_direct("secret_rotate", args)
        assert not again["changed"] and (project / ".env").read_text() == env_after
    finally:
        pg.sql('DROP ROLE IF EXISTS "%s"' % role)
        pg.sql("DROP TABLE IF EXISTS users_%s" % role)


@pytest.mark.parametrize("change, message", [
    (dict(env_keys=["NO_SUCH_KEY"]), "has no NO_SUCH_KEY: nothing rotated"),
    (dict(files=["../outside"]), "is not inside the project directory"),
    (dict(files=["secrets/missing.key"]), "does not exist: nothing rotated"),
    (dict(database_roles=[{"role": "no_such_role", "env_key": "APP_DB_PASSWORD"}]), "no_such_role do not exist"),
    # Without its marker a rerun would rotate again: a marker that cannot be written is refused first.
    (dict(marker="/nonexistent-lastgood-dir/rotated.json"),
     "the marker's directory /nonexistent-lastgood-dir is not a writable directory: nothing rotated"),
])
def test_rotation_refuses_unknown_names_and_changes_nothing(pg, tmp_path, change, message):
    project = _project(tmp_path, pg, "unused")
    env_before = (project / ".env").read_text()
    args = dict(project_dir=str(project), env_keys=["SESSION_SECRET"], files=["secrets/jwt.key"],
                database_roles=[{"role": "postgres", "env_key": "POSTGRES_PASSWORD"}],
                db_port=pg.port, db_password_env_key="POSTGRES_PASSWORD")
    args.update(change)
    result = bs.run_module_direct("secret_rotate", args)
    assert result["failed"] and message in result["msg"], result
    assert (project / ".env").read_text() == env_before
    assert (project / "secrets" / "jwt.key").read_text() == "old-jwt-key\n"
    assert _can_login(pg, "postgres", pg.password)


# -- the playbook, end to end -----------------------------------------------------------------
#
# The demo stack runs on the machine's 127.0.0.1 as always; the isolation targets a disposable
# namespace (lastgood_breach_netns), which stands for the host being isolated.

import ansible_run  # noqa: E402
import stacks  # noqa: E402

USERS = ("ann", "bob", "cy")


def _sql(connect, statement, params=None, dbname="app"):
    with psycopg2.connect(dbname=dbname, **connect) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


@pytest.fixture(scope="module")
def breach(module_stack, docker_client, tmp_path_factory):
    stack = module_stack()
    work = tmp_path_factory.mktemp("breach")
    backup_root = work / "backups"
    connect = stack.db_connect(connect_timeout=5)
    _sql(connect, "CREATE TABLE users (name text PRIMARY KEY, must_reset boolean NOT NULL DEFAULT false)")
    _sql(connect, "INSERT INTO users (name) SELECT unnest(%s::text[])", (list(USERS),))
    # Secrets the stack keeps: a .env key and a key file, committed like the rest of the deployment.
    with open(stack.dir / ".env", "a", encoding="utf-8") as handle:
        handle.write("APP_SECRET=old-app-secret-value\n")
    (stack.dir / "secrets").mkdir()
    (stack.dir / "secrets" / "api.key").write_text("old-api-key-value\n")
    git = ["git", "-C", stack.dir]
    stacks.run([*git, "add", "-A"])
    stacks.run([*git, "commit", "-q", "-m", "secrets"])
    # The patched release, on a branch of its own.
    stacks.run([*git, "checkout", "-q", "-b", "security-fix"])
    (stack.dir / "PATCHED").write_text("CVE fixed\n")
    stacks.run([*git, "add", "PATCHED"])
    stacks.run([*git, "commit", "-q", "-m", "security fix"])
    patch_commit = stacks.run([*git, "rev-parse", "HEAD"]).stdout.strip()
    stacks.run([*git, "checkout", "-q", "main"])

    host_vars = ansible_run.stack_host_vars(
        stack, backup_root, lastgood_databases=[{"name": "app", "service": "db", "port": stack.ports["db"]}],
        lastgood_gate_deadline_s=60)
    inventory = ansible_run.write_inventory(work, host_vars)
    try:
        snapshot = ansible_run.run_playbook("snapshot", inventory)
        assert snapshot.rc == 0, snapshot.describe()

        class Breach:
            pass
        found = Breach()
        found.stack, found.work, found.backup_root, found.connect = stack, work, backup_root, connect
        found.snapshot_id = snapshot.outcome()["snapshot_id"]
        found.patch_commit = patch_commit
        found.host_vars = host_vars
        found.since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        stacks.wait_until(lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > found.since, 5, message="a second later")
        yield found
    finally:
        ansible_run.remove_snapshot_pins(docker_client, backup_root)


def _breach_inventory(found, hosts, name, **extra):
    host_vars = dict(
        found.host_vars,
        lastgood_breach_since=found.since,
        lastgood_breach_admin_cidrs=[hosts.admin_cidr],
        lastgood_breach_ssh_port=bs.SSH_PORT,
        lastgood_breach_netns=hosts.host,
        lastgood_breach_isolation_state_dir=str(found.work / "isolation"),
        lastgood_breach_isolation_confirm_s=300,
        lastgood_breach_secrets=["APP_SECRET", "secrets/api.key"],
        lastgood_breach_database_roles=[{"role": "postgres", "env_key": "POSTGRES_PASSWORD"}],
        lastgood_breach_db_port=found.stack.ports["db"],
        lastgood_breach_password_reset_sql="UPDATE users SET must_reset = true",
        lastgood_breach_password_reset_database="app",
        lastgood_breach_patch_ref="security-fix",
        lastgood_breach_incident_dir=str(found.work / "incident"),
    )
    host_vars.update(extra)
    directory = found.work / name
    directory.mkdir(exist_ok=True)
    return ansible_run.write_inventory(directory, host_vars)


def _running(stack):
    return sorted(c.name for c in stack._client.containers.list(filters={"label": "com.docker.compose.project=%s" % stack.project}))


@pytest.mark.parametrize("extra, message", [
    (dict(lastgood_breach_admin_cidrs=["10.0.0.0/33"]), "is not an IPv4 or IPv6 network"),
    (dict(lastgood_breach_admin_cidrs=[]), "lastgood_breach_admin_cidrs is empty"),
    (dict(lastgood_breach_since="2000-01-01T00:00:00Z"), "no verified snapshot of"),
    # Without isolation no admin CIDR is needed: the next refusal is the snapshot's.
    (dict(lastgood_breach_isolate=False, lastgood_breach_admin_cidrs=[], lastgood_breach_since="2000-01-01T00:00:00Z"),
     "no verified snapshot of"),
    (dict(lastgood_breach_since="yesterday"), "is not an ISO 8601 time"),
])
def test_faults_are_refused_before_anything_stops(breach, hosts, extra, message):
    running = _running(breach.stack)
    inventory = _breach_inventory(breach, hosts, "fault", **extra)
    run = ansible_run.run_playbook("security_breach", inventory)
    assert run.rc != 0 and message in run.failure_msg(), run.describe()
    assert _running(breach.stack) == running
    assert hosts.paths() == bs.OPEN
    assert not (breach.work / "incident").exists()


def test_breach_procedure_end_to_end(breach, hosts):
    stack, connect = breach.stack, breach.connect
    old_password = stack.password
    # The breach: a backdoor in the compose file and the tree, a planted user, a deleted one.
    with open(stack.dir / "compose.yaml", "a", encoding="utf-8") as handle:
        handle.write("# backdoor\n")
    (stack.dir / "backdoor.sh").write_text("#!/bin/sh\n")
    _sql(connect, "INSERT INTO users (name) VALUES ('mallory')")
    _sql(connect, "DELETE FROM users WHERE name = 'ann'")
    inventory = _breach_inventory(breach, hosts, "run")

    planned = ansible_run.run_playbook("security_breach", inventory, check=True)
    assert planned.rc == 0, planned.describe()
    assert hosts.paths() == bs.OPEN and not (breach.work / "incident").exists()

    run = ansible_run.run_playbook("security_breach", inventory, timeout=600)
    assert run.rc == 0, run.describe()
    outcome = run.outcome()
    assert outcome["tier"] == "security_breach" and outcome["result"] == "success" and outcome["healthy"] is True, outcome
    assert outcome["snapshot_id"] == breach.snapshot_id
    # Its own outcome only: nothing left from the rollback and the snapshot it ran (set_stats merges).
    assert not {"tier_requested", "pruned"} & set(outcome), outcome
    # The figure (target < 5 s) is bench/bench_breach.py's; on a machine shared with other test runs
    # a looser bound keeps this test about behaviour, not load.
    assert float(outcome["isolated_s"]) < 10, outcome
    print("\nbreach: isolated after %s s, healthy after %s s" % (outcome["isolated_s"], outcome["healthy_s"]))

    # Isolated: the admin path connects, every other path is refused; the outcome says what holds at the end.
    assert hosts.paths() == ISOLATED
    assert outcome["isolated"] is True and "isolation kept" in (breach.work / "incident" / "steps.log").read_text()
    # Every step logged, in order, with a UTC timestamp.
    incident = breach.work / "incident"
    steps = [line.split(" ", 2) for line in (incident / "steps.log").read_text().splitlines()]
    assert [s[1] for s in steps] == ["started", "evidence", "isolated", "stopped", "restored", "patched", "rotated", "healthy",
                                     "snapshotted"]
    assert all(s[0].endswith("Z") and s[0][:4].isdigit() for s in steps)
    # Evidence: logs, processes, image IDs, the changed compose file, all checksummed.
    evidence = incident / "evidence"
    assert stacks.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=evidence).returncode == 0
    assert sorted(p.name.rsplit("-", 2)[1] for p in (evidence / "logs").iterdir()) == ["app", "db", "static"]
    containers = json.loads((evidence / "containers.json").read_text())
    assert {c["service"] for c in containers} == {"app", "db", "static"} and all(c["image_id"] for c in containers)
    assert any(p.name.endswith("-app-1.txt") for p in (evidence / "processes").iterdir())
    assert "compose.yaml" in [c["path"] for c in json.loads((evidence / "changed-files.json").read_text())]
    assert "?? backdoor.sh" in (evidence / "git.txt").read_text()
    assert (incident / "rules-before-isolation.v4").exists()

    # Restored from before the breach, then patched.
    assert sorted(r[0] for r in _sql(dict(connect, password=_env(stack)["POSTGRES_PASSWORD"]), "SELECT name FROM users")) == list(USERS)
    assert "# backdoor" not in (stack.dir / "compose.yaml").read_text()
    assert not (stack.dir / "backdoor.sh").exists()
    head = stacks.run(["git", "-C", stack.dir, "rev-parse", "HEAD"]).stdout.strip()
    assert head == breach.patch_commit and (stack.dir / "PATCHED").exists()

    # Rotated: new values, the old ones no longer work, users must reset their passwords.
    env = _env(stack)
    assert env["APP_SECRET"] != "old-app-secret-value" and len(env["APP_SECRET"]) >= 40
    assert (stack.dir / "secrets" / "api.key").read_text() != "old-api-key-value\n"
    assert env["POSTGRES_PASSWORD"] != old_password
    # A rotated file reaches no running container by itself (a new inode): every service is recreated.
    restarted = run.result("Restart with the new secrets")["services"]
    assert sorted(restarted) == ["app", "db", "static"] and all(entry["recreated"] for entry in restarted.values()), restarted
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _sql(connect, "SELECT 1")
    new_connect = dict(connect, password=env["POSTGRES_PASSWORD"])
    assert _sql(new_connect, "SELECT count(*) FROM users WHERE must_reset") == [(3,)]
    for value in (env["APP_SECRET"], env["POSTGRES_PASSWORD"], old_password, "old-app-secret-value"):
        assert value not in run.stdout + run.stderr
        for path in incident.rglob("*"):
            if path.is_file() and not path.parent.name == "logs":
                assert value not in path.read_text(errors="replace"), path
    assert stack.get("app", "/health")[0] == 200
    # The rotated state is last known good: a later rollback keeps the new secrets.
    after = outcome["snapshot_after"]
    assert ansible_run.last_known_good(breach.backup_root, stack.project) == after
    assert ansible_run.read_manifest(breach.backup_root, stack.project, after)["git"]["commit"] == breach.patch_commit

    # The operator's next run confirms the isolation; then it is lifted.
    confirm = ansible_run.run_playbook("security_breach", inventory, extra_vars={"lastgood_breach_confirm_isolation": True})
    assert confirm.rc == 0, confirm.describe()
    assert confirm.result("Confirm the isolation (stop the revert timer)")["changed"] is True
    assert hosts.paths() == ISOLATED
    lifted = ansible_run.run_playbook("lift_isolation", inventory)
    assert lifted.rc == 0 and lifted.result("Lift the isolation")["changed"] is True, lifted.describe()
    assert hosts.paths() == bs.OPEN
    assert [line.split(" ")[1] for line in (incident / "steps.log").read_text().splitlines()][-2:] == \
        ["isolation-confirmed", "isolation-lifted"]
    stack.password = env["POSTGRES_PASSWORD"]


def _env(stack):
    return stacks._read_env_file(stack.dir / ".env")


def test_a_newer_snapshot_that_does_not_verify_is_passed_over(breach, tmp_path):
    import shutil

    root = tmp_path / "backups" / breach.stack.project
    source = breach.backup_root / breach.stack.project / breach.snapshot_id
    shutil.copytree(source, root / breach.snapshot_id, symlinks=True)
    shutil.copytree(source, root / (breach.snapshot_id + "-b"), symlinks=True)
    dump = root / (breach.snapshot_id + "-b") / "databases" / "app.dump"
    pg_server.flip_byte(dump, dump.stat().st_size // 2)
    args = dict(project_dir=str(breach.stack.dir), backup_root=str(tmp_path / "backups"), before=breach.since,
                dest=str(tmp_path / "incident"))
    plan = bs.run_module_direct("evidence_capture", args, check=True)
    assert plan["snapshot_id"] == breach.snapshot_id, plan
    assert plan["passed_over"] == [{"id": breach.snapshot_id + "-b",
                                    "reason": "data artifacts missing or not matching their sha256: databases/app.dump"}]
    assert not (tmp_path / "incident").exists()
    pg_server.flip_byte(root / breach.snapshot_id / "databases" / "app.dump", 100)
    refused = bs.run_module_direct("evidence_capture", args)
    assert refused["failed"] and "no verified snapshot of %s was taken before" % breach.stack.project in refused["msg"]
    assert "passed over" in refused["msg"] and not (tmp_path / "incident").exists()
