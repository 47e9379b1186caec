# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis RDB backup and restore through a Docker Compose service.

The server is reached only through the compose service: ``docker compose exec -T <service>
redis-cli [-p <port>] [--user <user>] <command>``, as an argument list. A password is given
to redis-cli as the environment variable REDISCLI_AUTH, passed by name (``-e REDISCLI_AUTH``)
so that docker copies its value from the environment of the compose process: it never
appears on a command line (``/proc/<pid>/cmdline`` is world-readable). There is no direct
socket client. redis-cli prints error replies on stdout with exit code 0 (7.0 without
``-e``), so every reply is checked for the shape its command returns.

The RDB file is read and written on the host through the container's mounts: the server's
``dir`` (CONFIG GET) must lie on a volume or bind mount, which any Redis whose data survives
a container recreation has. That keeps the swap at restore a rename on one filesystem.

Backup: note ``rdb_saves`` (Redis 7+) or LASTSAVE, wait for a save already running, run
``BGSAVE SCHEDULE``, then poll INFO (with a deadline, backing off from 50 ms to 0.5 s) until
that save finished (``rdb_bgsave_in_progress:0``, ``rdb_saves`` grew / LASTSAVE changed) and
``rdb_last_bgsave_status:ok``. The file is then pinned with a hard link (Redis replaces it by
rename, never in place), copied with its sha256 computed while writing, and the pinned file
is checked by ``redis-check-rdb`` inside the container: CRC64 and structure, and the exact
number of keys it holds. Without redis-check-rdb in the image the counts come from the INFO
keyspace taken when the save finished: exact when ``rdb_changes_since_last_save`` was 0.

Restore: size and sha256 of the archive and the RDB framing (magic, EOF opcode) are checked
first; nothing changes before. Then: stage the file beside the live one (same owner and
mode); a running server's own ``redis-check-rdb`` checks the staged file (an RDB version newer
than the server reads, a bad CRC: the stage is removed, nothing else changed); stop the
service (``docker compose stop``; a server with save points writes a last snapshot on
shutdown, which becomes the safety copy), rename the live file to ``<dbfilename>.before-<id>``
and the staged one into place, start the service (``docker compose start``) and wait until
INFO shows ``loading:0``. With ``appendonly yes`` Redis would load the
AOF and ignore the RDB: for Redis 7+ (multi-part AOF, ``appenddirname``) the AOF directory is
set aside as ``<appenddirname>.before-<id>`` and a new one is written whose base is the
restored RDB, with an empty increment and a manifest; older servers with AOF on are refused.
Finally ``rdb_last_load_keys_loaded + rdb_last_load_keys_expired`` (the keys in the loaded
file; Redis 7+) must equal the recorded key count. A mismatch is reported as a failure and
the safety copy is kept.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import secrets
import shutil
import stat
import time

from ansible.module_utils.basic import env_fallback

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import ComposeError
from ansible_collections.lastgood.rollback.plugins.module_utils._services import STOPPABLE_STATES
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    APIError,
    docker_client,
    one_line,
    project_containers,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import create_private, isoformat, utc_now
from ansible_collections.lastgood.rollback.plugins.module_utils._volumes import VolumeError, check_snapshot_id, isoformat_ts
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError

# Options of the redis_* modules that say how to reach the server.
REDIS_ARGUMENT_SPEC = dict(
    service=dict(type="str", required=True),
    port=dict(type="int"),
    user=dict(type="str"),
    password=dict(type="str", no_log=True, fallback=(env_fallback, ["REDISCLI_AUTH"])),
)

CHUNK = 1024 * 1024
PREVIOUS_INFIX = ".before-"
STAGING_PREFIX = ".lgstage-"
PIN_PREFIX = ".lastgood-pin-"
_RDB_MAGIC = re.compile(rb"REDIS(\d{4})")
_KEYSPACE_DB = re.compile(r"^db(\d+)$")
_SAFE_FILE = re.compile(r"^[A-Za-z0-9._-]+$")
_CHECK_RDB_COUNTS = {
    "keys": re.compile(r"\[info\]\s+(\d+)\s+keys read"),
    "expires": re.compile(r"\[info\]\s+(\d+)\s+expires"),
    "already_expired": re.compile(r"\[info\]\s+(\d+)\s+already expired"),
}


class RedisError(StepError):
    """A refused or failed Redis operation; `msg` is one line, `result` what was done so far."""


def _first_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else "no output"


def parse_info(text):
    """INFO output as {field: value} (strings), plus 'keyspace': {db: {keys, expires}}."""
    fields = {}
    keyspace = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        match = _KEYSPACE_DB.match(key)
        if match:
            parts = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
            keyspace[int(match.group(1))] = {"keys": int(parts.get("keys", 0)), "expires": int(parts.get("expires", 0))}
        else:
            fields[key] = value
    fields["keyspace"] = keyspace
    return fields


def parse_pairs(text):
    """Raw redis-cli output of a flat array of name/value pairs (CONFIG GET) as a dict."""
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n") if text else []
    if len(lines) % 2:
        raise ValueError("odd number of lines")
    return dict(zip(lines[0::2], lines[1::2]))


def check_rdb_file(path):
    """The RDB version of a file that is framed as a complete RDB (magic, EOF opcode before
    the CRC64); RedisError otherwise. The CRC itself is checked by redis-check-rdb and Redis."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
            size = os.fstat(handle.fileno()).st_size
            match = _RDB_MAGIC.fullmatch(head)
            if not match:
                raise RedisError("%s is not an RDB file (no REDIS magic)" % path)
            version = int(match.group(1))
            tail_len = 9 if version >= 5 else 1
            if size < 9 + tail_len:
                raise RedisError("%s is truncated (%d bytes)" % (path, size))
            handle.seek(-tail_len, os.SEEK_END)
            if handle.read(1) != b"\xff":
                raise RedisError("%s is truncated: no end-of-file marker where RDB version %d puts it" % (path, version))
    except OSError as exc:
        raise RedisError("cannot read %s: %s" % (path, exc.strerror))
    return version


def copy_with_sha256(source, dest, mode=0o600):
    """Copy `source` to `dest` (created new, fsync'ed); (sha256, size) of the bytes written."""
    digest = hashlib.sha256()
    size = 0
    with create_private(dest, mode) as out:
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                out.write(block)
                digest.update(block)
                size += len(block)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class RedisService:
    """One Redis server, the single container of a compose service, driven with redis-cli."""

    def __init__(self, module, project, service, port=None, user=None, password=None, client=None):
        try:
            services = project.services
        except ComposeError as exc:
            raise RedisError(exc.msg, **exc.result)
        if service not in services:
            raise RedisError("unknown service %s in project %s" % (service, project.name))
        self.module = module
        self.project = project
        self.service = service
        self.port = port
        self.user = user
        self.password = password
        self.client = client or docker_client(module)

    # -- the container --------------------------------------------------------------------
    def container(self):
        """inspect output of the service's one container (None if it has none)."""
        containers = project_containers(self.client, self.project.name).get(self.service) or []
        if len(containers) > 1:
            raise RedisError("service %s has %d containers; exactly one Redis server is expected"
                             % (self.service, len(containers)))
        if not containers:
            return None
        try:
            return self.client.api.inspect_container(containers[0]["id"])
        except APIError as exc:
            raise RedisError("cannot inspect the container of service %s: %s" % (self.service, one_line(exc)))

    def host_dir(self, container_dir, attrs=None):
        """The host directory behind the container directory `container_dir`, through its mounts."""
        attrs = attrs or self.container()
        if attrs is None:
            raise RedisError("service %s has no container" % self.service)
        if not posixpath.isabs(container_dir):
            raise RedisError("the Redis dir %r is not an absolute path" % container_dir)
        wanted = posixpath.normpath(container_dir)
        best = None
        for mount in attrs.get("Mounts") or []:
            dest = posixpath.normpath(mount.get("Destination") or "/")
            if wanted == dest or wanted.startswith(dest.rstrip("/") + "/"):
                if best is None or len(dest) > len(posixpath.normpath(best["Destination"])):
                    best = mount
        if best is None or best.get("Type") not in ("volume", "bind") or not best.get("Source"):
            raise RedisError("the Redis dir %s of service %s is not on a volume or bind mount: its data would not survive "
                             "the container and cannot be reached from the host" % (wanted, self.service))
        rel = posixpath.relpath(wanted, posixpath.normpath(best["Destination"]))
        source = os.path.realpath(best["Source"])
        path = os.path.realpath(os.path.join(source, rel)) if rel != "." else source
        if path != source and not path.startswith(source.rstrip("/") + "/"):
            raise RedisError("the Redis dir %s resolves outside its mount" % wanted)
        if not os.path.isdir(path):
            raise RedisError("the Redis dir %s of service %s (%s on the host) does not exist" % (wanted, self.service, path))
        return path

    # -- redis-cli ------------------------------------------------------------------------
    def exec_command(self, args):
        cmd = self.project.base_command() + ["exec", "-T"]
        if self.password:
            cmd += ["-e", "REDISCLI_AUTH"]
        cmd += ["--", self.service] + list(args)
        environ = {"REDISCLI_AUTH": self.password} if self.password else None
        rc, out, err = self.module.run_command(cmd, cwd=self.project.project_dir, environ_update=environ)
        return cmd, rc, out, err

    def cli(self, *args):
        """stdout of `redis-cli <args>` in the service's container; RedisError when it fails."""
        prefix = ["redis-cli"]
        if self.port:
            prefix += ["-p", str(self.port)]
        if self.user:
            prefix += ["--user", self.user]
        cmd, rc, out, err = self.exec_command(prefix + [str(a) for a in args])
        if rc != 0:
            raise RedisError("redis-cli %s in service %s failed: %s" % (args[0], self.service, _first_line(err or out)),
                             cmd=cmd, rc=rc, stdout=out, stderr=err)
        return out

    def _reply_error(self, command, out):
        return RedisError("redis-cli %s in service %s: %s" % (command, self.service, _first_line(out)))

    def info(self):
        out = self.cli("INFO")
        if "# Persistence" not in out:
            raise self._reply_error("INFO", out)
        return parse_info(out)

    def config(self):
        out = self.cli("CONFIG", "GET", "*")
        try:
            values = parse_pairs(out)
        except ValueError:
            values = {}
        if "dir" not in values or "dbfilename" not in values:
            raise self._reply_error("CONFIG GET", out)
        return values

    def bgsave(self):
        """'started', 'scheduled' or 'busy' (a save is already running)."""
        out = self.cli("BGSAVE", "SCHEDULE")
        text = _first_line(out)
        if text.startswith("Background saving started"):
            return "started"
        if text.startswith("Background saving scheduled"):
            return "scheduled"
        if "already in progress" in text:
            return "busy"
        raise self._reply_error("BGSAVE", out)

    def check_rdb(self, container_path):
        """Counts from redis-check-rdb on a file in the container; None if it is not installed."""
        cmd, rc, out, err = self.exec_command(["redis-check-rdb", container_path])
        text = (out or "") + "\n" + (err or "")
        if rc in (126, 127) or "executable file not found" in text or "no such file or directory: unknown" in text:
            return None
        if rc != 0 or "RDB looks OK" not in text:
            raise RedisError("redis-check-rdb rejects the snapshot %s: %s" % (container_path, _last_line(text)),
                             cmd=cmd, rc=rc, stdout=out, stderr=err)
        counts = {}
        for key, pattern in _CHECK_RDB_COUNTS.items():
            match = pattern.search(text)
            counts[key] = int(match.group(1)) if match else 0
        return counts

    # -- compose --------------------------------------------------------------------------
    def compose(self, args):
        try:
            return self.project.run(args)
        except ComposeError as exc:
            raise RedisError(exc.msg, **exc.result)


def _last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _poll(deadline, interval):
    time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    return min(interval * 2, 0.5)


def wait_bgsave(server, deadline):
    """Run BGSAVE and wait until that save completed successfully; the INFO at completion."""
    info = server.info()
    interval = 0.05
    while True:
        saves_before = info.get("rdb_saves")
        lastsave_before = info.get("rdb_last_save_time")
        if info.get("rdb_bgsave_in_progress") == "0":
            state = server.bgsave()
            if state != "busy":
                break
        if time.monotonic() >= deadline:
            raise RedisError("a BGSAVE already running in service %s did not finish in time" % server.service)
        interval = _poll(deadline, interval)
        info = server.info()
    interval = 0.05
    while True:
        info = server.info()
        if info.get("rdb_bgsave_in_progress") == "0":
            if saves_before is not None:
                finished = int(info.get("rdb_saves", 0)) > int(saves_before)
            else:  # Redis < 7: LASTSAVE (whole seconds) is what changes
                finished = info.get("rdb_last_save_time") != lastsave_before
            if finished:
                if info.get("rdb_last_bgsave_status") != "ok":
                    raise RedisError("BGSAVE in service %s failed (rdb_last_bgsave_status:%s); see the server's log"
                                     % (server.service, info.get("rdb_last_bgsave_status")))
                return info
        if time.monotonic() >= deadline:
            raise RedisError("BGSAVE in service %s did not complete in time (in progress: %s)"
                             % (server.service, info.get("rdb_bgsave_in_progress")))
        interval = _poll(deadline, interval)


def _keys_from_info(info):
    keyspace = info.get("keyspace") or {}
    return sum(db["keys"] for db in keyspace.values()), sum(db["expires"] for db in keyspace.values())


def backup_redis(module, project, service, dest_path, timeout=60, port=None, user=None, password=None, client=None):
    """Snapshot a Redis server (BGSAVE, awaited) and copy the RDB to `dest_path`.

    Returns dict(service, file, sha256, size, keys, expires, keys_exact, keys_source,
    keyspace, dir, dbfilename, appendonly, rdb_version, redis_version, bgsave_wait_s,
    created_at, warnings). Raises RedisError.
    """
    started = time.monotonic()
    deadline = started + timeout
    moment = utc_now()
    server = RedisService(module, project, service, port=port, user=user, password=password, client=client)
    attrs = server.container()
    status = (attrs.get("State") or {}).get("Status") if attrs else "absent"
    if status != "running":  # a restarting or paused server does not answer either
        raise RedisError("service %s is not running (%s): a snapshot needs the server" % (service, status))
    config = server.config()
    dbfilename = config["dbfilename"]
    if not _SAFE_FILE.fullmatch(dbfilename) or dbfilename in (".", ".."):
        raise RedisError("the Redis dbfilename %r is not a plain file name" % dbfilename)
    host_dir = server.host_dir(config["dir"], attrs)
    info = wait_bgsave(server, deadline)
    waited = time.monotonic() - started

    dest_path = os.path.abspath(dest_path)
    os.makedirs(os.path.dirname(dest_path), mode=0o750, exist_ok=True)
    partial = "%s.part-%d" % (dest_path, os.getpid())
    pin_name = "%s%s-%s" % (PIN_PREFIX, secrets.token_hex(6), dbfilename)
    pin = os.path.join(host_dir, pin_name)
    warnings = []
    try:
        # Pin the snapshot just written: a later save replaces the file by rename, the pin keeps
        # this one for the copy and the check.
        os.link(os.path.join(host_dir, dbfilename), pin)
        digest, size = copy_with_sha256(pin, partial)
        rdb_version = check_rdb_file(partial)
        counts = server.check_rdb(posixpath.join(posixpath.normpath(config["dir"]), pin_name))
        os.replace(partial, dest_path)
    except OSError as exc:
        raise RedisError("copying the RDB snapshot of service %s failed: %s" % (service, one_line(exc)))
    finally:
        for path in (pin, partial):
            try:
                os.unlink(path)
            except OSError:
                pass
    keys, expires = _keys_from_info(info)
    if counts is not None:
        keys_source, keys_exact = "redis-check-rdb", True
        keys, expires = counts["keys"], counts["expires"]
    else:
        keys_source = "info"
        keys_exact = info.get("rdb_changes_since_last_save") == "0"
        if not keys_exact:
            warnings.append("service %s: redis-check-rdb is not in the image and keys changed while the snapshot was taken: "
                            "the recorded key count (%d) is approximate" % (service, keys))
    return {
        "service": service,
        "file": dest_path,
        "sha256": digest,
        "size": size,
        "keys": keys,
        "expires": expires,
        "keys_exact": keys_exact,
        "keys_source": keys_source,
        "keyspace": {"db%d" % db: per_db for db, per_db in sorted(info["keyspace"].items())},
        "dir": posixpath.normpath(config["dir"]),
        "dbfilename": dbfilename,
        "appendonly": config.get("appendonly") == "yes",
        "rdb_version": rdb_version,
        "redis_version": info.get("redis_version"),
        "bgsave_wait_s": round(waited, 3),
        "created_at": isoformat(moment),
        "warnings": warnings,
    }


def _aof_manifest(appendfilename):
    base = "%s.1.base.rdb" % appendfilename
    incr = "%s.1.incr.aof" % appendfilename
    return base, incr, "file %s seq 1 type b\nfile %s seq 1 type i\n" % (base, incr)


def _unused_path(base):
    candidate, counter = base, 1
    while os.path.lexists(candidate):
        counter += 1
        candidate = "%s-%d" % (base, counter)
    return candidate


def _wait_loaded(server, deadline):
    """Poll until the restarted server answers INFO with loading:0; its INFO then."""
    interval = 0.05
    last_problem = "not started"
    while True:
        attrs = server.container()
        state = (attrs or {}).get("State") or {}
        if attrs is not None and not state.get("Running") and state.get("Status") in ("exited", "dead"):
            raise RedisError("service %s exited (code %s) while loading the restored snapshot"
                             % (server.service, state.get("ExitCode")))
        if state.get("Running"):
            try:
                info = server.info()
                if info.get("loading") == "0":
                    return info
                last_problem = "still loading"
            except RedisError as exc:
                last_problem = exc.msg
        if time.monotonic() >= deadline:
            raise RedisError("service %s did not finish loading in time: %s" % (server.service, last_problem))
        interval = _poll(deadline, interval)


def restore_redis(module, project, service, archive_path, recorded, check_mode=False, timeout=60, port=None,
                  user=None, password=None, snapshot_id=None, keep_previous=True, force=False, stop_timeout=None,
                  client=None):
    """Put the RDB `archive_path` back into a Redis service, with the server stopped.

    `recorded` is what backup_redis returned (at least `sha256`; `size`, `keys`, `keys_exact`,
    `dir` and `dbfilename` are used when present). Returns dict(changed, actions, keys_loaded,
    keys_expired_at_load, keys_verified, keyspace, previous, downtime, ...). Raises RedisError
    (its `result` tells what was done); before the swap a failure changes nothing.
    """
    recorded = recorded or {}
    snapshot_id = snapshot_id or utc_now().strftime("%Y%m%dT%H%M%SZ")
    result = {"changed": False, "actions": [], "service": service, "archive": archive_path, "previous": [],
              "downtime": None}
    try:
        check_snapshot_id(snapshot_id)
    except VolumeError as exc:
        raise RedisError(exc.msg, **result)
    expected = recorded.get("sha256")
    if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise RedisError("no valid sha256 recorded for %s: refusing to restore an unverifiable snapshot" % archive_path,
                         **result)
    try:
        size = os.stat(archive_path).st_size
    except OSError as exc:
        raise RedisError("snapshot %s cannot be read: %s" % (archive_path, exc.strerror), **result)
    if recorded.get("size") is not None and size != int(recorded["size"]):
        raise RedisError("snapshot %s is %d bytes, the backup recorded %d: it is truncated or not the recorded file"
                         % (archive_path, size, int(recorded["size"])), **result)
    actual = sha256_of(archive_path)
    if actual != expected:
        raise RedisError("snapshot %s does not match its recorded sha256 (expected %s..., got %s...)"
                         % (archive_path, expected[:12], actual[:12]), **result)
    check_rdb_file(archive_path)

    server = RedisService(module, project, service, port=port, user=user, password=password, client=client)
    attrs = server.container()
    if attrs is None:
        raise RedisError("service %s has no container: create it first (docker compose up --no-start)" % service, **result)
    status = (attrs.get("State") or {}).get("Status")
    # Only a running server answers for its configuration. A restarting one (a crash loop, often
    # the reason for the restore) or a paused one is read as down, but it is stopped before the swap
    # like a running one: it would otherwise load the data in the middle of it.
    running = status == "running"
    must_stop = status in STOPPABLE_STATES
    if running:
        config = server.config()
        info = server.info()
        appendonly = config.get("appendonly") == "yes"
    else:
        config = {"dir": recorded.get("dir") or "/data", "dbfilename": recorded.get("dbfilename") or "dump.rdb",
                  "appenddirname": "appendonlydir", "appendfilename": "appendonly.aof"}
        info = {}
        appendonly = None
    dbfilename = config["dbfilename"]
    if not _SAFE_FILE.fullmatch(dbfilename) or dbfilename in (".", ".."):
        raise RedisError("the Redis dbfilename %r is not a plain file name" % dbfilename, **result)
    host_dir = server.host_dir(config["dir"], attrs)
    live = os.path.join(host_dir, dbfilename)
    aof_dirname = config.get("appenddirname")
    if appendonly is None:
        # The server is down: AOF is on when the backup recorded it on or its directory is there; a
        # single-file AOF (Redis < 7) there would be loaded instead of the restored RDB.
        if os.path.isfile(os.path.join(host_dir, config["appendfilename"])):
            aof_dirname = None
        appendonly = (bool(recorded.get("appendonly")) or not aof_dirname
                      or os.path.isdir(os.path.join(host_dir, aof_dirname)))
    if appendonly and not aof_dirname:
        raise RedisError("service %s has appendonly on with a single-file AOF (Redis < 7, %s), which would be loaded "
                         "instead of the restored RDB: turn appendonly off and move the file aside for the restore"
                         % (service, config.get("appendfilename") or "appendonly.aof"), **result)
    appendfilename = config.get("appendfilename") or "appendonly.aof"
    if appendonly and (not _SAFE_FILE.fullmatch(aof_dirname) or not _SAFE_FILE.fullmatch(appendfilename)):
        raise RedisError("unexpected AOF names %r/%r in service %s" % (aof_dirname, appendfilename, service), **result)
    result.update({"dir": config["dir"], "dbfilename": dbfilename, "host_path": live, "appendonly": appendonly})

    if (running and not force and os.path.isfile(live) and info.get("rdb_changes_since_last_save") == "0"
            and sha256_of(live) == expected):
        result["msg"] = "service %s already runs on this snapshot" % service
        return result

    stage = os.path.join(host_dir, "%s%s-%s" % (STAGING_PREFIX, snapshot_id, dbfilename))
    previous = _unused_path(os.path.join(host_dir, dbfilename + PREVIOUS_INFIX + snapshot_id))
    aof_live = os.path.join(host_dir, aof_dirname) if appendonly else None
    aof_stage = os.path.join(host_dir, "%s%s-%s" % (STAGING_PREFIX, snapshot_id, aof_dirname)) if appendonly else None
    aof_previous = _unused_path(aof_live + PREVIOUS_INFIX + snapshot_id) if appendonly else None
    actions = result["actions"]
    actions.append("stage %s as %s" % (archive_path, stage))
    if running:
        actions.append("check the staged snapshot with the server's own redis-check-rdb")
    if must_stop:
        actions.append("stop service %s" % service)
    if os.path.lexists(live):
        actions.append("rename %s to %s" % (live, previous))
    actions.append("rename the staged snapshot to %s" % live)
    if appendonly:
        actions.append("set the AOF directory %s aside as %s and write one whose base is the snapshot"
                       % (aof_live, aof_previous))
    actions.append("start service %s and wait until the snapshot is loaded" % service)
    actions.append("verify the key count (%s recorded)" % recorded.get("keys", "none"))
    result["changed"] = True
    if check_mode:
        return result

    reference = live if os.path.isfile(live) else host_dir
    owner = os.stat(reference)
    file_mode = stat.S_IMODE(owner.st_mode) if reference == live else 0o644
    try:
        _stage_file(archive_path, stage, expected, owner, file_mode)
        if running:
            # The server's own binary, before it is stopped: an RDB version newer than it reads, or a
            # file it would refuse, would leave the service down after the swap.
            server.check_rdb(posixpath.join(posixpath.normpath(config["dir"]), os.path.basename(stage)))
        if appendonly:
            _stage_aof(archive_path, aof_stage, appendfilename, owner, file_mode, os.stat(host_dir))
    except (OSError, RedisError) as exc:
        _remove_tree_or_file(stage)
        if aof_stage:
            _remove_tree_or_file(aof_stage)
        raise RedisError("staging the snapshot for service %s failed, nothing changed: %s"
                         % (service, exc.msg if isinstance(exc, RedisError) else one_line(exc)), **result)

    stopped_at = time.time()
    swapped = []
    try:
        if must_stop:
            args = ["stop"] + (["--timeout", str(stop_timeout)] if stop_timeout is not None else [])
            server.compose(args + ["--", service])
        if os.path.lexists(live):
            os.rename(live, previous)
            swapped.append((live, previous))
        os.rename(stage, live)
        swapped.append((stage, live))
        if appendonly:
            if os.path.lexists(aof_live):
                os.rename(aof_live, aof_previous)
                swapped.append((aof_live, aof_previous))
            os.rename(aof_stage, aof_live)
            swapped.append((aof_stage, aof_live))
    except (OSError, RedisError) as exc:
        for source, target in reversed(swapped):
            try:
                os.rename(target, source)
            except OSError:
                pass
        _remove_tree_or_file(stage)
        if aof_stage:
            _remove_tree_or_file(aof_stage)
        problem = exc.msg if isinstance(exc, RedisError) else one_line(exc)
        try:
            if must_stop:
                server.compose(["start", "--", service])
        except RedisError as start_exc:
            problem += "; starting it again failed too: %s" % start_exc.msg
        raise RedisError("restore of service %s failed before the new snapshot was in place, nothing changed: %s"
                         % (service, problem), **result)
    result["previous"] = [target for source, target in swapped if PREVIOUS_INFIX in os.path.basename(target)]

    deadline = time.monotonic() + timeout
    try:
        server.compose(["start", "--", service])
        info = _wait_loaded(server, deadline)
    except RedisError as exc:
        result["downtime"] = _window(stopped_at, time.time())
        raise RedisError("the snapshot is in place but service %s did not come back: %s (previous data kept: %s)"
                         % (service, exc.msg, ", ".join(result["previous"]) or "none"), **result)
    result["downtime"] = _window(stopped_at, time.time())
    verify_keys(result, info, recorded, service)
    if not keep_previous:
        for path in result["previous"]:
            _remove_tree_or_file(path)
        result["previous"] = []
    return result


def verify_keys(result, info, recorded, service):
    """Compare the keys the server loaded with the recorded count; RedisError on a mismatch."""
    keys_now, expires_now = _keys_from_info(info)
    result["keyspace"] = {"db%d" % db: counts for db, counts in sorted(info["keyspace"].items())}
    result["keys"] = keys_now
    result["expires"] = expires_now
    if "rdb_last_load_keys_loaded" in info:
        loaded = int(info["rdb_last_load_keys_loaded"])
        expired = int(info.get("rdb_last_load_keys_expired", 0))
    else:  # Redis < 7: what is there now
        loaded, expired = keys_now, 0
    result["keys_loaded"] = loaded
    result["keys_expired_at_load"] = expired
    wanted = recorded.get("keys")
    if wanted is None:
        result["keys_verified"] = False
        result["msg"] = "service %s restored; %d keys loaded (no recorded count to compare)" % (service, loaded)
        return
    wanted = int(wanted)
    if "rdb_last_load_keys_loaded" in info:
        matches = loaded + expired == wanted
    else:
        matches = wanted - int(recorded.get("expires") or 0) <= loaded <= wanted
    result["keys_verified"] = bool(matches and recorded.get("keys_exact", True))
    if not matches and recorded.get("keys_exact", True):
        raise RedisError("service %s loaded %d keys (+%d expired at load) but the snapshot recorded %d; the previous data "
                         "is kept at %s" % (service, loaded, expired, wanted, ", ".join(result["previous"]) or "none"),
                         **result)
    result["msg"] = "service %s restored; %d keys loaded (+%d expired at load), %d recorded" % (
        service, loaded, expired, wanted)


def _window(down, up):
    return {"down_at": isoformat_ts(down), "up_at": isoformat_ts(up), "seconds": round(up - down, 3)}


def _stage_file(source, stage, expected_sha256, owner, mode):
    _remove_tree_or_file(stage)
    digest = copy_with_sha256(source, stage, mode=0o600)[0]
    if digest != expected_sha256:
        raise RedisError("snapshot %s changed while it was being staged" % source)
    os.chown(stage, owner.st_uid, owner.st_gid)
    os.chmod(stage, mode)


def _stage_aof(source, directory, appendfilename, owner, mode, dir_info):
    """A Redis 7 AOF directory whose base is the RDB `source`, an empty increment, a manifest."""
    _remove_tree_or_file(directory)
    os.mkdir(directory, 0o700)
    base, incr, manifest = _aof_manifest(appendfilename)
    shutil.copyfile(source, os.path.join(directory, base))
    with open(os.path.join(directory, incr), "wb"):
        pass
    with open(os.path.join(directory, appendfilename + ".manifest"), "w", encoding="utf-8") as handle:
        handle.write(manifest)
    for name in (base, incr, appendfilename + ".manifest"):
        path = os.path.join(directory, name)
        os.chown(path, owner.st_uid, owner.st_gid)
        os.chmod(path, mode)
    os.chown(directory, dir_info.st_uid, dir_info.st_gid)
    os.chmod(directory, stat.S_IMODE(dir_info.st_mode))


def _remove_tree_or_file(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            os.unlink(path)
        except OSError:
            pass
