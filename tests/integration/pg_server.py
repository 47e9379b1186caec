"""A private PostgreSQL 15 server on the host, for the direct-mode tests and the bench; and the
PostgreSQL modules run the way Ansible runs a module on a host.

    with PgServer.started() as server:          # initdb + start; stopped and removed on exit
        server.port, server.password, server.dsn("postgres")
        conn = server.connect("postgres")       # autocommit psycopg2 connection
        server.sql("CREATE DATABASE shop")

The cluster lives in its own directory under /tmp (data directory, Unix socket directory, log),
owned by the ``postgres`` OS user when the tests run as root (initdb and postgres refuse to
run as root); as any other user it runs as that user. It listens on 127.0.0.1 only, on a free
port above 20000, with scram-sha-256 password authentication for TCP and the superuser
password handed to initdb in a 0600 file (never on a command line). Local socket connections
use peer authentication.

When /usr/lib/postgresql/15/bin/postgres is missing and we are root, Debian's postgresql-15
package is installed first (scripts/setup-engine.sh installs it too).

    result = run_module("postgres_dump", {...})            # -> ModuleRun: .result, .rc, .seconds
    running = start_module("postgres_restore", {...})      # in the background: .wait(), .kill_all()

run_module() executes ``python -m ansible_collections.lastgood.rollback.plugins.modules.<name>
<args file>``, exactly what Ansible executes on a managed host, without the controller around it
(about 0.3 s instead of 1-2 s per run); ansible_run.py runs them through ansible-playbook.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2

try:
    from . import stacks
except ImportError:
    import stacks

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PACKAGE = "postgresql-15"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60


class ServerError(RuntimeError):
    pass


def ensure_binaries():
    """The server binaries of PostgreSQL 15, installing Debian's package if we can."""
    if (PG_BIN / "postgres").is_file():
        return PG_BIN
    if os.geteuid() != 0:
        raise ServerError("%s is missing and only root can install %s" % (PG_BIN / "postgres", PG_PACKAGE))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    stacks.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", PG_PACKAGE], env=env, check=False,
               timeout=600)
    if not (PG_BIN / "postgres").is_file():
        stacks.run(["apt-get", "update", "-q"], env=env, timeout=600)
        stacks.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", PG_PACKAGE], env=env, timeout=600)
    return PG_BIN


def _run_as_kwargs():
    """subprocess keyword arguments that drop root to the postgres OS user."""
    if os.geteuid() != 0:
        return {}
    return {"user": SUPERUSER, "group": pwd.getpwnam(SUPERUSER).pw_gid, "extra_groups": []}


def _owner_ids():
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam(SUPERUSER)
    return entry.pw_uid, entry.pw_gid


class PgClient:
    """Connections to a server as its superuser over TCP (the tests' own view, independent of the modules)."""

    def __init__(self, host, port, user, password):
        self.host = host
        self.port = port
        self.user = user
        self.password = password

    def dsn_params(self, dbname="postgres"):
        return dict(host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname,
                    connect_timeout=5)

    def connect(self, dbname="postgres"):
        conn = psycopg2.connect(**self.dsn_params(dbname))
        conn.autocommit = True
        return conn

    def sql(self, statement, params=None, dbname="postgres"):
        """Run one statement in autocommit mode; the rows it returned (or [])."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def env(self):
        """Environment for libpq client programs run against this server (password by environment)."""
        env = dict(os.environ)
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGPASSWORD=self.password)
        return env

    def databases(self):
        return sorted(row[0] for row in self.sql("SELECT datname FROM pg_database WHERE NOT datistemplate"))

    def table_counts(self, dbname):
        """{(schema, table): rows} of the base tables of a database."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT table_schema, table_name FROM information_schema.tables "
                            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')")
                counts = {}
                for schema, table in cur.fetchall():
                    cur.execute('SELECT count(*) FROM "%s"."%s"' % (schema.replace('"', '""'), table.replace('"', '""')))
                    counts[(schema, table)] = cur.fetchone()[0]
                return counts
        finally:
            conn.close()

    def answers(self, dbname):
        """True when the database accepts a new connection and answers a query."""
        return self.sql("SELECT 42", dbname=dbname) == [(42,)]

    def database_row(self, dbname):
        """(datallowconn, datacl as text) of a database, or None."""
        rows = self.sql("SELECT datallowconn, datacl::text FROM pg_database WHERE datname = %s", (dbname,))
        return rows[0] if rows else None

    def drop_databases(self, keep=lambda name: False):
        """Drop every non-template database except postgres and those `keep` accepts."""
        for name in self.databases():
            if name != "postgres" and not keep(name):
                self.sql('DROP DATABASE "%s" WITH (FORCE)' % name.replace('"', '""'))


class PgServer(PgClient):
    """One initialised cluster; start() runs it, stop() stops it, remove() deletes it."""

    def __init__(self, base_dir, port, password, settings=None):
        super().__init__("127.0.0.1", port, SUPERUSER, password)
        self.base = Path(base_dir)
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log = self.base / "server.log"
        self.settings = dict(settings or {})
        self.process = None

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, settings=None, password=None):
        """initdb a new cluster in a private directory under /tmp (not started yet)."""
        ensure_binaries()
        base = Path(tempfile.mkdtemp(prefix="lastgood-pg-"))
        server = cls(base, stacks.free_port(), password or "pg-test-" + secrets.token_urlsafe(12), settings)
        try:
            server._initdb()
        except BaseException:
            server.remove()
            raise
        return server

    @classmethod
    @contextlib.contextmanager
    def started(cls, settings=None, password=None):
        server = cls.create(settings=settings, password=password)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            server.remove()

    def _initdb(self):
        uid, gid = _owner_ids()
        os.chown(self.base, uid, gid)
        os.chmod(self.base, 0o700)
        self.socket_dir.mkdir(mode=0o700)
        os.chown(self.socket_dir, uid, gid)
        pwfile = self.base / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password + "\n")
        os.chown(pwfile, uid, gid)
        try:
            proc = subprocess.run(
                [str(PG_BIN / "initdb"), "--pgdata", str(self.data), "--username", SUPERUSER,
                 "--pwfile", str(pwfile), "--auth-local=peer", "--auth-host=scram-sha-256",
                 "--encoding=UTF8", "--locale=C.UTF-8"],
                capture_output=True, text=True, check=False, timeout=120, cwd=str(self.base), **_run_as_kwargs())
        finally:
            pwfile.unlink()
        if proc.returncode != 0:
            raise ServerError("initdb failed (%d): %s" % (proc.returncode, proc.stderr))

    def start(self):
        if self.process is not None:
            return
        args = [str(PG_BIN / "postgres"), "-D", str(self.data),
                "-c", "listen_addresses=127.0.0.1", "-c", "port=%d" % self.port,
                "-c", "unix_socket_directories=%s" % self.socket_dir]
        for key, value in self.settings.items():
            args += ["-c", "%s=%s" % (key, value)]
        # The server keeps writing to its log after this process closed its copy.
        log = open(self.log, "ab")  # pylint: disable=consider-using-with
        uid, gid = _owner_ids()
        os.chown(self.log, uid, gid)
        try:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(self.base),
                start_new_session=True, **_run_as_kwargs())
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise ServerError("postgres exited at start:\n" + self.log_tail())
            try:
                self.connect("postgres").close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerError("postgres did not accept connections within %d s:\n%s"
                                      % (START_TIMEOUT_S, self.log_tail())) from None
                time.sleep(0.1)

    def stop(self):
        """Fast shutdown (SIGINT): sessions are disconnected, the server checkpoints and exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.process = None

    def remove(self):
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __repr__(self):
        return "PgServer(127.0.0.1:%d, %s)" % (self.port, self.base)


# -- the modules, run as Ansible runs them on a host -----------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO_ROOT / ".collections"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
MODULE_PACKAGE = "ansible_collections.lastgood.rollback.plugins.modules."


class ModuleRun:
    """A module process: started in the background (its own session), or finished."""

    def __init__(self, name, args, check=False, env=None):
        self.name = name
        module_args = dict(args)
        if check:
            module_args["_ansible_check_mode"] = True
        module_args.setdefault("_ansible_diff", True)
        fd, self.args_file = tempfile.mkstemp(prefix="lastgood-module-args-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": module_args}, handle)
        python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
        run_env = dict(os.environ if env is None else env, PYTHONPATH=str(COLLECTIONS))
        self.started = time.monotonic()
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            [str(python), "-m", MODULE_PACKAGE + name, self.args_file], env=run_env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True)
        self.stdout = self.stderr = ""
        self.rc = None
        self.seconds = None
        self.result = None

    @property
    def pid(self):
        return self.process.pid

    def wait(self, timeout=600):
        try:
            out, err = self.process.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.args_file)
        self.seconds = time.monotonic() - self.started
        self.stdout, self.stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        self.rc = self.process.returncode
        try:
            self.result = json.loads(self.stdout)
        except ValueError:
            self.result = None
        return self

    def kill_all(self):
        """SIGKILL the module and every process it started (its session's process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    @property
    def failed(self):
        return self.result is None or bool(self.result.get("failed"))

    def describe(self):
        return "%s rc=%s\nstdout: %s\nstderr: %s" % (self.name, self.rc, self.stdout[-6000:], self.stderr[-3000:])


def start_module(name, args, check=False, env=None):
    return ModuleRun(name, args, check=check, env=env)


def run_module(name, args, check=False, env=None, timeout=600):
    return ModuleRun(name, args, check=check, env=env).wait(timeout=timeout)


# -- watching the host's processes --------------------------------------------------------------

def processes():
    """{pid: (ppid, argv)} of every process on the host (containers' processes included)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                argv = [part.decode("utf-8", "replace") for part in handle.read().split(b"\x00") if part]
            with open("/proc/%s/stat" % entry, "rb") as handle:
                ppid = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if argv:
            found[int(entry)] = (ppid, argv)
    return found


def find_pg_restore(database):
    """Pid of the main pg_restore writing into `database` (a parallel restore's workers are its children)."""
    table = processes()
    candidates = [pid for pid, (_ppid, argv) in table.items()
                  if os.path.basename(argv[0]) == "pg_restore" and any(database in arg for arg in argv)]
    for pid in candidates:
        parent = table[pid][0]
        if parent not in table or os.path.basename(table[parent][1][0]) != "pg_restore":
            return pid
    return None


def wait_for_restore_copying(client, database, timeout=60):
    """Wait until a pg_restore copies rows into `database`; the pid of the main pg_restore."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        copying = client.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'COPY %%'",
                             (database,))[0][0]
        pid = find_pg_restore(database) if copying else None
        if pid:
            return pid
        time.sleep(0.02)
    raise AssertionError("no pg_restore copied into %s within %d s" % (database, timeout))


class CmdlineSampler(threading.Thread):
    """Reads every /proc/<pid>/cmdline over and over while it runs; remembers any holding the secret,
    and which of `programs` it saw (so that a test can prove it looked while they ran)."""

    def __init__(self, secret, programs=("pg_dump", "pg_restore")):
        super().__init__(daemon=True)
        self.secret = secret.encode()
        self.programs = programs
        self.leaks = []
        self.seen = set()
        self.argvs = []
        self.rounds = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % entry, "rb") as handle:
                        cmdline = handle.read()
                except OSError:
                    continue
                if self.secret in cmdline:
                    self.leaks.append(cmdline)
                argv = [part.decode("utf-8", "replace") for part in cmdline.split(b"\x00") if part]
                if argv and os.path.basename(argv[0]) in self.programs:
                    self.seen.add(os.path.basename(argv[0]))
                if argv and os.path.basename(argv[0]) == "docker" and argv not in self.argvs:
                    self.argvs.append(argv)
            self.rounds += 1

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.join()


def flip_byte(path, offset):
    """Change one bit of one byte of a file in place."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
