"""redis_backup and redis_restore against real Redis 7 servers in disposable compose stacks.

Each stack `lgr<hex>` runs redis-server from lastgood-bench/debian:bookworm on 127.0.0.1 and a
free port (host networking), with its data on a named volume at /data and no save points,
plus an idle busybox service that must never be touched. The modules run the way Ansible runs
them on a host (pg_server.run_module); every stack, with its volumes, is removed after its
test, pass or fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path

import pytest

try:
    from . import ansible_run, pg_server, stacks
except ImportError:
    import ansible_run
    import pg_server
    import stacks

if str(pg_server.COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(pg_server.COLLECTIONS))

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402

from ansible_collections.lastgood.rollback.plugins.module_utils import _compose, _redis  # noqa: E402

DEBIAN = "lastgood-bench/debian:bookworm"
BUSYBOX = "lastgood-bench/busybox:1"
IDLE = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


class RedisStack:
    def __init__(self, parent, client, password=None, appendonly=False):
        self.client = client
        self.project = "lgr%s" % secrets.token_hex(4)
        self.dir = Path(parent) / self.project
        self.dir.mkdir()
        self.port = stacks.free_port()
        self.password = password
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", "/data", "--save", "",
                   "--appendonly", "yes" if appendonly else "no"]
        if password:
            # The test server's own setting: a throwaway password; CmdlineWatch ignores redis-server.
            command += ["--requirepass", password]
        spec = {
            "name": self.project,
            "services": {
                "redis": {"image": DEBIAN, "network_mode": "host", "command": command, "volumes": ["data:/data"]},
                "other": {"image": BUSYBOX, "network_mode": "host", "command": IDLE},
            },
            "volumes": {"data": {}},
        }
        (self.dir / "compose.yaml").write_text(json.dumps(spec, indent=2))

    def compose(self, *args, check=True, env=None):
        return stacks.run(["docker", "compose", *args], cwd=self.dir, env=dict(stacks.clean_env(), **(env or {})),
                          check=check)

    def up(self):
        self.compose("up", "-d")
        stacks.wait_until(lambda: self.cli("PING", check=False).stdout.strip() == "PONG", 30,
                          message="%s redis answers" % self.project)

    def destroy(self):
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "1", check=False)

    def cli(self, *args, check=True):
        env = {"REDISCLI_AUTH": self.password} if self.password else {}
        exec_args = ["exec", "-T"] + (["-e", "REDISCLI_AUTH"] if self.password else [])
        return self.compose(*exec_args, "redis", "redis-cli", "-p", str(self.port), *args, check=check, env=env)

    def value(self, *args):
        return self.cli(*args).stdout.strip()

    def keyspace(self):
        return _redis.parse_info(self.cli("INFO", "keyspace").stdout)["keyspace"]

    def fill(self, count, prefix="k", db=0, ttl=None):
        script = ("for i=1,tonumber(ARGV[1]) do redis.call('SET', ARGV[2]..i, string.rep('v', 64)..i) end "
                  "if ARGV[3] ~= '' then for i=1,tonumber(ARGV[1]) do redis.call('EXPIRE', ARGV[2]..i, ARGV[3]) end end "
                  "return 1")
        self.cli("-n", str(db), "EVAL", script, "0", str(count), prefix, str(ttl or ""))

    def data_dir(self):
        return Path(self.client.api.inspect_volume("%s_data" % self.project)["Mountpoint"])

    def identity(self, service):
        found = self.client.api.containers(all=True, filters={"label": [
            "com.docker.compose.project=%s" % self.project, "com.docker.compose.service=%s" % service]})
        attrs = self.client.api.inspect_container(found[0]["Id"])
        return attrs["Id"], attrs["State"]["StartedAt"], attrs["State"]["Running"]

    def project_args(self):
        args = {"project_dir": str(self.dir), "service": "redis", "port": self.port}
        if self.password:
            args["password"] = self.password
        return args


@pytest.fixture
def rstack(demo_images, docker_client, tmp_path):
    made = []

    def factory(**kw):
        stack = RedisStack(tmp_path, docker_client, **kw)
        made.append(stack)
        stack.up()
        return stack

    yield factory
    for stack in made:
        stack.destroy()


def run(module, args, check=False):
    return pg_server.run_module(module, args, check=check, timeout=300)


def ok(module, args, check=False):
    result = run(module, args, check=check)
    assert not result.failed, result.describe()
    return result.result


def refused(module, args, check=False):
    result = run(module, args, check=check)
    assert result.failed, result.describe()
    assert "\n" not in result.result["msg"]
    return result.result


def as_record(result):
    return {key: value for key, value in result.items() if key not in ("warnings", "invocation", "changed", "actions")}


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class CmdlineWatch(stacks.Watch):
    """Scans every process's command line while a block runs; `.seen` holds those containing `secret`."""

    def __init__(self, secret):
        super().__init__()
        self.secret = secret.encode()
        self.seen = []
        self.scans = 0

    def look(self):
        own = str(os.getpid())
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == own:
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            if self.secret in cmdline and b"redis-server" not in cmdline:
                self.seen.append(cmdline.replace(b"\0", b" ").decode("utf-8", "replace"))
        self.scans += 1


def test_round_trip_with_password_never_on_a_command_line(rstack, tmp_path):
    password = "pw-%s" % secrets.token_hex(8)
    stack = rstack(password=password)
    stack.fill(300, "user:")
    stack.fill(20, "session:", ttl=3600)
    stack.fill(7, "other:", db=2)
    keyspace = stack.keyspace()
    assert keyspace == {0: {"keys": 320, "expires": 20}, 2: {"keys": 7, "expires": 0}}
    dest = tmp_path / "redis.rdb"

    planned = ok("redis_backup", dict(stack.project_args(), dest=str(dest)), check=True)
    assert planned["changed"] is True and not dest.exists()
    assert planned["host_path"] == str(stack.data_dir() / "dump.rdb")
    with CmdlineWatch(password) as watch:
        backup = ok("redis_backup", dict(stack.project_args(), dest=str(dest)))
    assert watch.scans > 10 and watch.seen == []
    assert password not in json.dumps(backup)
    assert backup["sha256"] == sha256(dest) and backup["size"] == dest.stat().st_size
    assert (backup["keys"], backup["expires"], backup["keys_exact"], backup["keys_source"]) == (
        327, 20, True, "redis-check-rdb")
    assert backup["keyspace"] == {"db0": {"keys": 320, "expires": 20}, "db2": {"keys": 7, "expires": 0}}
    assert (stat_mode(dest), backup["rdb_version"], backup["appendonly"]) == (0o600, 10, False)
    assert [n for n in os.listdir(stack.data_dir()) if n.startswith(".lastgood")] == []

    # What went wrong afterwards: data lost and replaced.
    stack.cli("FLUSHALL")
    stack.fill(5, "junk:")
    stack.cli("SAVE")
    junk_dump = sha256(stack.data_dir() / "dump.rdb")
    other = stack.identity("other")
    with CmdlineWatch(password) as watch:
        restored = ok("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=as_record(backup),
                                            snapshot_id="s1"))
    assert watch.seen == []
    assert restored["changed"] is True and restored["keys_verified"] is True
    assert (restored["keys_loaded"], restored["keys_expired_at_load"]) == (327, 0)
    assert stack.keyspace() == keyspace
    assert stack.value("GET", "user:42") == "v" * 64 + "42"
    assert stack.value("-n", "2", "GET", "other:7") == "v" * 64 + "7"
    assert stack.value("EXISTS", "junk:1") == "0"
    assert int(stack.value("TTL", "session:1")) > 3000
    assert restored["downtime"]["seconds"] > 0
    assert stack.identity("other") == other
    previous = stack.data_dir() / "dump.rdb.before-s1"
    assert restored["previous"] == [str(previous)] and sha256(previous) == junk_dump
    assert sha256(stack.data_dir() / "dump.rdb") == backup["sha256"]

    again = ok("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=as_record(backup)))
    assert again["changed"] is False


def stat_mode(path):
    return os.stat(path).st_mode & 0o7777


def test_bgsave_completion_is_awaited(rstack, tmp_path):
    """A save that takes seconds: the copy must be the new snapshot, complete, not the old file."""
    stack = rstack()
    stack.fill(10, "old:")
    stack.cli("SAVE")  # an older, complete dump.rdb is already there
    old_dump = sha256(stack.data_dir() / "dump.rdb")
    stack.fill(3000, "new:")
    # 1 ms per key written: about 3 s for this save.
    stack.cli("CONFIG", "SET", "rdb-key-save-delay", "1000")
    dest = tmp_path / "slow.rdb"
    started = time.monotonic()
    backup = ok("redis_backup", dict(stack.project_args(), dest=str(dest), timeout=60))
    took = time.monotonic() - started
    assert backup["bgsave_wait_s"] >= 2.5 and took >= 2.5, backup
    assert backup["keys"] == 3010 and backup["keys_exact"] is True
    assert backup["sha256"] != old_dump
    stack.cli("CONFIG", "SET", "rdb-key-save-delay", "0")
    # The copy loads: every key comes back.
    stack.cli("FLUSHALL")
    restored = ok("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=as_record(backup)))
    assert restored["keys_loaded"] == 3010 and stack.keyspace() == {0: {"keys": 3010, "expires": 0}}


def test_timeout_while_bgsave_runs(rstack, tmp_path):
    stack = rstack()
    stack.fill(2000, "k:")
    stack.cli("CONFIG", "SET", "rdb-key-save-delay", "2000")  # ~4 s
    result = refused("redis_backup", dict(stack.project_args(), dest=str(tmp_path / "x.rdb"), timeout=1))
    assert "did not complete in time" in result["msg"]
    assert not (tmp_path / "x.rdb").exists()
    stack.cli("CONFIG", "SET", "rdb-key-save-delay", "0")


def test_restore_with_appendonly_on(rstack, tmp_path):
    stack = rstack(appendonly=True)
    stack.fill(50, "a:")
    dest = tmp_path / "aof.rdb"
    backup = ok("redis_backup", dict(stack.project_args(), dest=str(dest)))
    assert backup["appendonly"] is True and backup["keys"] == 50
    stack.cli("FLUSHALL")
    stack.fill(3, "after:")
    restored = ok("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=as_record(backup),
                                        snapshot_id="aof1"))
    assert restored["appendonly"] is True and restored["keys_loaded"] == 50
    assert stack.keyspace() == {0: {"keys": 50, "expires": 0}}
    assert (stack.data_dir() / "appendonlydir.before-aof1").is_dir()
    # The AOF now carries the restored data: a restart keeps it.
    stack.compose("restart", "redis")
    stacks.wait_until(lambda: stack.cli("PING", check=False).stdout.strip() == "PONG", 30)
    assert stack.keyspace() == {0: {"keys": 50, "expires": 0}}


def test_a_crash_looping_server_is_stopped_and_restored(rstack, tmp_path):
    """The usual reason for a restore: the server cannot load its data and restarts over and over
    (docker's `restarting` state, in which it answers nothing)."""
    stack = rstack()
    stack.fill(30, "k:")
    dest = tmp_path / "good.rdb"
    backup = as_record(ok("redis_backup", dict(stack.project_args(), dest=str(dest))))
    stack.compose("stop", "redis")
    (stack.data_dir() / "dump.rdb").write_bytes(b"REDIS0011" + b"\x00" * 64)  # cannot be loaded
    container_id = stack.identity("redis")[0]
    stack.client.api.update_container(container_id, restart_policy={"Name": "always"})
    stack.compose("start", "redis")

    def restarting_after(count):
        state = stack.client.api.inspect_container(container_id)
        return state["State"]["Status"] == "restarting" and state["RestartCount"] > count
    stacks.wait_until(lambda: restarting_after(4), 60, message="redis restarts in a loop")
    # The engine doubles the wait between restarts (3.2 s, then 6.4 s): the modules run at the start
    # of a fresh wait, not in the moment the server runs and fails again.
    count = stack.client.api.inspect_container(container_id)["RestartCount"]
    stacks.wait_until(lambda: restarting_after(count), 60, message="redis restarts again")
    refusal = refused("redis_backup", dict(stack.project_args(), dest=str(tmp_path / "no.rdb")))
    assert "is not running (restarting)" in refusal["msg"], refusal["msg"]

    restored = ok("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=backup, snapshot_id="loop"))
    assert "stop service redis" in restored["actions"] and restored["keys_loaded"] == 30
    assert stack.keyspace() == {0: {"keys": 30, "expires": 0}}
    assert (stack.data_dir() / "dump.rdb.before-loop").read_bytes().startswith(b"REDIS0011")


def test_a_stopped_server_recorded_with_appendonly_gets_its_aof_written(rstack, tmp_path):
    """Down, the server cannot say whether AOF is on: the backup's record says it, else the
    AOF would be the data it loads, not the restored snapshot."""
    stack = rstack(appendonly=True)
    stack.fill(20, "a:")
    dest = tmp_path / "aof.rdb"
    backup = as_record(ok("redis_backup", dict(stack.project_args(), dest=str(dest))))
    assert backup["appendonly"] is True
    stack.cli("FLUSHALL")
    stack.compose("stop", "redis")
    restored = ok("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=backup, snapshot_id="down"))
    assert restored["appendonly"] is True and restored["keys_loaded"] == 20
    assert stack.keyspace() == {0: {"keys": 20, "expires": 0}}

    # A single-file AOF (Redis < 7) next to a stopped server would be loaded instead: refused, nothing moved.
    stack.compose("stop", "redis")
    (stack.data_dir() / "appendonly.aof").write_text("*1\r\n$8\r\nFLUSHALL\r\n")
    before = sorted(os.listdir(stack.data_dir()))
    refusal = refused("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=backup, snapshot_id="x"))
    assert "single-file AOF" in refusal["msg"], refusal["msg"]
    assert sorted(os.listdir(stack.data_dir())) == before


def test_bad_snapshot_is_refused_before_any_change(rstack, tmp_path):
    stack = rstack()
    stack.fill(40, "k:")
    dest = tmp_path / "good.rdb"
    backup = as_record(ok("redis_backup", dict(stack.project_args(), dest=str(dest))))
    stack.fill(5, "later:")
    stack.cli("SAVE")
    live = stack.data_dir() / "dump.rdb"
    live_sum = sha256(live)
    redis = stack.identity("redis")
    raw = dest.read_bytes()
    flipped = tmp_path / "flipped.rdb"
    flipped.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    truncated = tmp_path / "truncated.rdb"
    truncated.write_bytes(raw[:-20])
    # Files whose record matches but that the server itself would not load: the server's own
    # redis-check-rdb refuses them before it is stopped.
    too_new = tmp_path / "too-new.rdb"
    too_new.write_bytes(b"REDIS0099" + raw[9:])
    cases = [
        (too_new, {"sha256": sha256(too_new)}, "redis-check-rdb rejects the snapshot"),
        (flipped, {"sha256": sha256(flipped)}, "redis-check-rdb rejects the snapshot"),
        (flipped, backup, "does not match its recorded sha256"),
        (truncated, backup, "it is truncated or not the recorded file"),
        (truncated, {"sha256": sha256(truncated)}, "is truncated: no end-of-file marker"),
        (tmp_path / "absent.rdb", backup, "cannot be read"),
    ]
    for path, record, expected in cases:
        result = refused("redis_restore", dict(stack.project_args(), archive=str(path), recorded=record))
        assert expected in result["msg"], result["msg"]
        assert stack.identity("redis") == redis and sha256(live) == live_sum
        assert stack.keyspace() == {0: {"keys": 45, "expires": 0}}
        assert sorted(os.listdir(stack.data_dir())) == ["dump.rdb"]


def test_check_mode_changes_nothing_and_key_mismatch_fails(rstack, tmp_path):
    stack = rstack()
    stack.fill(25, "k:")
    dest = tmp_path / "r.rdb"
    backup = as_record(ok("redis_backup", dict(stack.project_args(), dest=str(dest))))
    stack.cli("FLUSHALL")
    stack.cli("SAVE")
    redis = stack.identity("redis")
    live_sum = sha256(stack.data_dir() / "dump.rdb")
    planned = ok("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=backup), check=True)
    assert planned["changed"] is True and any(a == "stop service redis" for a in planned["actions"])
    assert stack.identity("redis") == redis and sha256(stack.data_dir() / "dump.rdb") == live_sum
    assert stack.keyspace() == {} and sorted(os.listdir(stack.data_dir())) == ["dump.rdb"]

    # A recorded count the file does not hold: the restore fails and keeps the safety copy.
    wrong = dict(backup, keys=26)
    result = refused("redis_restore", dict(stack.project_args(), archive=str(dest), recorded=wrong, snapshot_id="m1"))
    assert "loaded 25 keys" in result["msg"] and "recorded 26" in result["msg"]
    assert (stack.data_dir() / "dump.rdb.before-m1").exists()
    assert sha256(stack.data_dir() / "dump.rdb.before-m1") == live_sum


def test_python_api_with_a_stopped_server(rstack, docker_client, tmp_path):
    """The entry points snapshot_create calls; a restore also works when the server is down."""
    stack = rstack()
    stack.fill(12, "k:")
    with patch_module_args({}):
        module = AnsibleModule(argument_spec={})
    project = _compose.ComposeProject(module, str(stack.dir))
    record = _redis.backup_redis(module, project, "redis", str(tmp_path / "api.rdb"), timeout=30, port=stack.port)
    assert record["keys"] == 12
    stack.cli("FLUSHALL")
    stack.compose("stop", "redis")
    done = _redis.restore_redis(module, project, "redis", record["file"], record, port=stack.port, snapshot_id="api")
    assert done["changed"] is True and done["keys_loaded"] == 12
    assert stack.keyspace() == {0: {"keys": 12, "expires": 0}}
    with pytest.raises(_redis.RedisError, match="unknown service"):
        _redis.backup_redis(module, project, "nosuch", str(tmp_path / "x.rdb"))


def test_snapshot_create_records_the_rdb_and_the_volume(rstack, tmp_path):
    """A snapshot with lastgood_redis and lastgood_volumes: the RDB (key count) and the volume
    archive land in the snapshot next to its manifest, each with a sha256 that matches."""
    stack = rstack()
    stack.fill(300)
    backup_root = tmp_path / "backups"
    result = ok("snapshot_create", {"project_dir": str(stack.dir), "backup_root": str(backup_root), "pin_images": False,
                                    "redis": "redis", "redis_port": stack.port, "volumes": ["data"]})
    manifest = result["manifest"]
    snapshot_dir = Path(result["snapshot_dir"])
    assert json.loads((snapshot_dir / "manifest.json").read_text()) == manifest
    assert manifest["redis"]["keys"] == 300 and manifest["redis"]["service"] == "redis"
    assert sha256(snapshot_dir / manifest["redis"]["file"]) == manifest["redis"]["sha256"]
    volume = "%s_data" % stack.project  # the compose key resolves to the volume's real name
    assert list(manifest["volumes"]) == [volume]
    assert sha256(snapshot_dir / manifest["volumes"][volume]["file"]) == manifest["volumes"][volume]["sha256"]
    assert manifest["databases"] == {}


def test_snapshot_create_fails_whole_when_a_data_step_fails(rstack, tmp_path):
    """A Redis service that does not exist: nothing is published, no staging left behind."""
    stack = rstack()
    backup_root = tmp_path / "backups"
    msg = refused("snapshot_create", {"project_dir": str(stack.dir), "backup_root": str(backup_root), "pin_images": False,
                                      "redis": "other", "volumes": ["data"]})["msg"]
    assert msg.startswith("snapshot not written: "), msg
    project_root = backup_root / stack.project
    assert not project_root.exists() or list(project_root.iterdir()) == []


def test_full_tier_puts_redis_and_the_volume_back(rstack, tmp_path):
    """playbooks/snapshot.yml then playbooks/rollback_full.yml on a stack with lastgood_redis and
    lastgood_volumes: after the keys and the volume's files have changed, the full tier (which
    holds the project's lock itself) restores the volume and the RDB of the last known good
    snapshot, and the broken state stays in the safety snapshot."""
    stack = rstack()
    stack.fill(40, "good:")
    (stack.data_dir() / "marker.txt").write_text("good\n")
    backup_root = tmp_path / "backups"
    inventory = ansible_run.write_inventory(tmp_path, {
        "lastgood_project_dir": str(stack.dir), "lastgood_backup_root": str(backup_root),
        "lastgood_redis": "redis", "lastgood_redis_port": stack.port, "lastgood_volumes": ["data"],
        "lastgood_health_checks": [{"name": "redis", "type": "tcp", "port": stack.port}]})
    snapshot = ansible_run.run_playbook("snapshot", inventory)
    assert snapshot.rc == 0, snapshot.describe()

    stack.cli("FLUSHALL")
    stack.fill(7, "bad:")
    (stack.data_dir() / "marker.txt").write_text("bad\n")
    (stack.data_dir() / "written-since.txt").write_text("new\n")

    run = ansible_run.run_playbook("rollback_full", inventory, extra_vars={"lastgood_confirm": "yes"})
    assert run.rc == 0, run.describe()
    stacks.wait_until(lambda: stack.cli("PING", check=False).stdout.strip() == "PONG", 30, message="redis answers")
    assert stack.keyspace() == {0: {"keys": 40, "expires": 0}}
    assert stack.value("GET", "good:1").endswith("1") and stack.value("EXISTS", "bad:1") == "0"
    assert (stack.data_dir() / "marker.txt").read_text() == "good\n"
    assert not (stack.data_dir() / "written-since.txt").exists()
    first, safety = [sid for sid in ansible_run.snapshot_ids(backup_root, stack.project) if sid[0].isdigit()]
    assert ansible_run.read_manifest(backup_root, stack.project, first)["redis"]["keys"] == 40
    assert ansible_run.read_manifest(backup_root, stack.project, safety)["redis"]["keys"] == 7, \
        "the safety snapshot should hold the broken state's keys"
