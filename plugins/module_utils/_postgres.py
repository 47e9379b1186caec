# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL dump and verified restore, directly or through a compose service.

Two ways to reach a server (a *target*):

- ``DirectTarget``: the module host connects over TCP (or a socket directory) with psycopg2 for
  SQL and runs the client programs (``pg_dump``, ``pg_restore``) found on the module host.
- ``ComposeTarget``: everything runs inside the container of a compose service through
  ``docker compose exec -T`` - ``pg_dump``/``pg_restore`` with the data streamed through the exec
  channel, and SQL through one long-lived ``psql`` process per session. The server's port needs
  not be reachable from the host.

Programs always run as argument lists, never through a shell. The password is never put on a
command line: libpq reads ``PGPASSWORD`` from the environment of the program; in compose mode
``docker compose exec -e PGPASSWORD`` names the variable only, and docker takes its value from
the environment of the ``docker compose`` process.

SQL is composed with ``psycopg2.sql`` (Identifier, Literal). Direct sessions hand the composed
statements to psycopg2; psql sessions render them with the same quoting rules (``render``).

``dump_database`` and ``restore_database`` are the public entry points (see their docstrings).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import posixpath
import re
import secrets
import shutil
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import ComposeError, ComposeProject
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    ManifestError,
    check_safe_name,
    create_private,
    isoformat,
    sha256_file,
    utc_now,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError, fail_step

try:
    import psycopg2
    from psycopg2 import sql
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only without psycopg2
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()
    psycopg2 = None
    sql = None

# Options shared by the PostgreSQL modules (documented in the lastgood.rollback.postgres fragment).
POSTGRES_ARGUMENT_SPEC = dict(
    database=dict(type="str", required=True),
    host=dict(type="str"),
    port=dict(type="int", default=5432),
    user=dict(type="str", default="postgres"),
    password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
    maintenance_db=dict(type="str", default="postgres"),
    connect_timeout=dict(type="int", default=10),
    bin_dir=dict(type="str"),
    project_dir=dict(type="path"),
    files=dict(type="list", elements="str"),
    project_name=dict(type="str"),
    service=dict(type="str"),
    container_user=dict(type="str", default="postgres"),
)
POSTGRES_REQUIRED_TOGETHER = [("project_dir", "service")]

FORMATS = ("custom", "directory")
APPLICATION_NAME = "lastgood.rollback"
MASK = "********"
# NAMEDATALEN - 1: PostgreSQL silently truncates longer identifiers, which could make two
# names collide; every name this code creates or addresses must fit.
MAX_IDENTIFIER_BYTES = 63
SCRATCH_PREFIX = "lastgood_restore_"
SAFETY_INFIX = "_before_"
# Room asked for the restored copy beyond its recorded size (indexes rebuilt compactly, but
# also the free space map, visibility maps and some slack).
SPACE_FACTOR = 1.15
SWAP_ATTEMPTS = 20
TERMINATE_WAIT_MS = 3000
# GUCs whose stored value is a list of quoted items: pg_dump's variable_is_guc_list_quote().
LIST_QUOTE_GUCS = frozenset(("local_preload_libraries", "search_path", "session_preload_libraries",
                             "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"))
DATABASE_PRIVILEGES = frozenset(("CREATE", "TEMPORARY", "CONNECT"))
_MARKER_ALLOW = re.compile(r"\[allow_connections=(true|false)\]")
_ERROR_LINE = re.compile(r"\berror\b|\b(ERROR|FATAL|PANIC):", re.IGNORECASE)


class PostgresError(StepError):
    """A step failed; `msg` is one line, `result` carries cmd/rc/stderr and the steps done so far."""


fail_postgres = fail_step


def require_psycopg2(module):
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2 (psycopg2-binary)"), exception=PSYCOPG2_IMPORT_ERROR)


def one_line(text):
    return " ".join(str(text).split())


def last_line(text):
    """The most telling line of a program's error output: the last that reports an error
    (pg_restore follows its error with CONTEXT and "Command was:" lines), else the last one."""
    lines = [" ".join(line.split()) for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no error output"


# -- identifiers and SQL text ------------------------------------------------------------------

def check_identifier(name, what="database name"):
    """Refuse what cannot be a PostgreSQL identifier as it is: empty, NUL, too long (truncated)."""
    if not isinstance(name, str) or not name:
        raise PostgresError("%s must be a non-empty string" % what)
    if "\x00" in name:
        raise PostgresError("%s %r contains a NUL character" % (what, name))
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise PostgresError("%s %r is longer than %d bytes (PostgreSQL would truncate it)"
                            % (what, name, MAX_IDENTIFIER_BYTES))
    return name


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value):
    """A SQL literal; the session runs with standard_conforming_strings=on (backslashes are plain)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def render(statement):
    """SQL text of a psycopg2.sql composition, quoted the way psycopg2 quotes it, without a connection."""
    if isinstance(statement, str):
        return statement
    if isinstance(statement, sql.Composed):
        return "".join(render(part) for part in statement.seq)
    if isinstance(statement, sql.Identifier):
        return ".".join(quote_ident(part) for part in statement.strings)
    if isinstance(statement, sql.Literal):
        return quote_literal(statement.wrapped)
    if isinstance(statement, sql.SQL):
        return statement.string
    raise TypeError("cannot render %r" % (statement,))


def conninfo_dbname(name):
    """`dbname='...'` for --dbname: a name containing '=' is never read as a connection string."""
    return "dbname='%s'" % name.replace("\\", "\\\\").replace("'", "\\'")


def split_guc_list(value):
    """Items of a list-valued setting as PostgreSQL stores it (`"$user", public`): SplitGUCList."""
    items = []
    pos, length = 0, len(value)
    while True:
        while pos < length and value[pos].isspace():
            pos += 1
        if pos < length and value[pos] == '"':
            pos += 1
            chars = []
            while pos < length:
                if value[pos] == '"':
                    if pos + 1 < length and value[pos + 1] == '"':
                        chars.append('"')
                        pos += 2
                        continue
                    pos += 1
                    break
                chars.append(value[pos])
                pos += 1
            items.append("".join(chars))
        else:
            start = pos
            while pos < length and value[pos] != "," and not value[pos].isspace():
                pos += 1
            items.append(value[start:pos])
        while pos < length and value[pos].isspace():
            pos += 1
        if pos >= length:
            return items
        if value[pos] != ",":
            raise ValueError("invalid list syntax in %r" % value)
        pos += 1


def setting_statement(database, role, entry):
    """ALTER DATABASE/ROLE ... SET for one `name=value` entry of pg_db_role_setting."""
    name, value = entry.split("=", 1)
    if name.lower() in LIST_QUOTE_GUCS:
        values = sql.SQL(", ").join(sql.Literal(item) for item in split_guc_list(value))
    else:
        values = sql.Literal(value)
    if role:
        prefix = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), sql.Identifier(database))
    else:
        prefix = sql.SQL("ALTER DATABASE {}").format(sql.Identifier(database))
    return sql.SQL("{} SET {} TO {}").format(prefix, sql.Identifier(name), values)


def scratch_name(database):
    """The scratch database of restores of `database`: fixed, so a rerun finds a leftover one."""
    return SCRATCH_PREFIX + hashlib.sha256(database.encode("utf-8")).hexdigest()[:12]


def safety_base_name(database, snapshot_id):
    """`<database>_before_<snapshot id>`; a long database name is shortened with a hash to fit."""
    suffix = SAFETY_INFIX + snapshot_id
    name = database + suffix
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES - 3:  # room for a _N suffix
        return name
    tag = "~" + hashlib.sha256(database.encode("utf-8")).hexdigest()[:6]
    room = MAX_IDENTIFIER_BYTES - 3 - len((tag + suffix).encode("utf-8"))
    if room < 1:
        raise PostgresError("snapshot id %r is too long for a safety copy name" % snapshot_id)
    head = database.encode("utf-8")[:room].decode("utf-8", "ignore")
    return head + tag + suffix


def safety_copy_name(database, snapshot_id, existing):
    """A free name for the safety copy: the base name, else the base name with _2, _3, ..."""
    base = safety_base_name(database, snapshot_id)
    if base not in existing:
        return base
    for number in range(2, 100):
        candidate = "%s_%d" % (base, number)
        if candidate not in existing:
            return candidate
    raise PostgresError("too many safety copies named %s_N exist; drop some" % base)


def safety_copies(database, snapshot_id, existing):
    """Existing safety copies of `database` for a snapshot (base name and _N variants)."""
    base = safety_base_name(database, snapshot_id)
    pattern = re.compile(re.escape(base) + r"(_[0-9]+)?\Z")
    return sorted(name for name in existing if pattern.match(name))


def advisory_key(database):
    """A signed 64-bit key for pg_try_advisory_lock, per restored database."""
    digest = hashlib.sha256(("lastgood.rollback restore " + database).encode("utf-8")).digest()
    return struct.unpack(">q", digest[:8])[0]


def scratch_marker(database, snapshot_id, allow_connections):
    return ("lastgood.rollback scratch database: restore of %s from snapshot %s, safe to drop "
            "[allow_connections=%s]" % (quote_ident(database), snapshot_id, "true" if allow_connections else "false"))


def marker_allows_connections(comment):
    """What a scratch marker recorded about the live database's connections (None: no marker)."""
    match = _MARKER_ALLOW.search(comment or "")
    return None if match is None else match.group(1) == "true"


def human_bytes(count):
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return "%.1f %s" % (value, unit) if unit != "B" else "%d B" % count
        value /= 1024.0
    return "%d B" % count  # pragma: no cover


def space_needed(size, wal_same_filesystem, max_wal_bytes):
    """Bytes a restored copy of a `size`-byte database needs, WAL included when it shares the disk."""
    need = int(size * SPACE_FACTOR)
    if wal_same_filesystem:
        need += min(size, max_wal_bytes)
    return need


def compare_tables(recorded, found):
    """Problems between recorded and found {table: rows}: missing, unexpected, different counts."""
    problems = []
    missing = sorted(set(recorded) - set(found))
    extra = sorted(set(found) - set(recorded))
    if missing:
        problems.append("missing tables: %s" % ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if extra:
        problems.append("unexpected tables: %s" % ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))
    wrong = ["%s has %s rows, recorded %s" % (name, found[name], recorded[name])
             for name in sorted(set(recorded) & set(found)) if int(found[name]) != int(recorded[name])]
    if wrong:
        problems.append("; ".join(wrong[:10]) + (" ..." if len(wrong) > 10 else ""))
    return problems


def check_recorded(recorded):
    """The parts of a dump record a restore relies on; PostgresError if it is not usable."""
    if not isinstance(recorded, dict):
        raise PostgresError("recorded must be the dict returned by the dump")
    sha = recorded.get("sha256")
    if not isinstance(sha, str) or not re.match(r"^[0-9a-f]{64}$", sha):
        raise PostgresError("recorded has no valid sha256")
    tables = recorded.get("tables")
    if not isinstance(tables, dict):
        raise PostgresError("recorded has no tables mapping (row counts of the dump)")
    for name, rows in tables.items():
        try:
            if int(rows) < 0:
                raise ValueError
        except (TypeError, ValueError):
            raise PostgresError("recorded row count of %s is not a number: %r" % (name, rows))
    fmt = recorded.get("format", "custom")
    if fmt not in FORMATS:
        raise PostgresError("recorded format %r is not one of %s" % (fmt, ", ".join(FORMATS)))
    return fmt


# -- splitting a full read over several processes ---------------------------------------------

_DATA_ENTRY = re.compile(r"^\d+; \d+ \d+ (TABLE DATA|BLOBS|BLOB DATA|LARGE OBJECT) (.*)$")


def split_toc(listing, tables, parts):
    """Split `pg_restore --list` output into `parts` lists whose union is every entry: each data
    entry in exactly one list, balanced by the recorded row counts (largest first into the
    lightest list); the entries without data go into the first list. [] when there is nothing to split."""
    entries = [line for line in listing.splitlines() if line.strip() and not line.startswith(";")]
    data, other = [], []
    for line in entries:
        match = _DATA_ENTRY.match(line)
        (data if match else other).append((line, match))
    if parts < 2 or len(data) < 2:
        return []
    weights = []
    known = sorted(int(rows) for rows in tables.values()) or [1]
    fallback = max(1, known[len(known) // 2])
    for line, match in data:
        weight = fallback
        rest = match.group(2)
        for key, rows in tables.items():
            schema, _dot, table = key.partition(".")
            if rest.startswith("%s %s " % (schema.strip('"'), table.strip('"'))):
                weight = max(1, int(rows))
                break
        weights.append((weight, line))
    bins = [[0, []] for _index in range(min(parts, len(data)))]
    for weight, line in sorted(weights, key=lambda item: -item[0]):
        lightest = min(bins, key=lambda item: item[0])
        lightest[0] += weight
        lightest[1].append(line)
    bins[0][1].extend(line for line, _match in other)
    return ["\n".join(lines) + "\n" for _weight, lines in bins]


# -- archives on disk --------------------------------------------------------------------------

def directory_digest(path):
    """(sha256, size) of a directory-format dump: sha256 of its `sha256sum`-style listing."""
    lines = []
    total = 0
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full) or os.path.islink(full):
            raise PostgresError("unexpected entry %s in directory dump %s" % (name, path))
        lines.append("%s  %s\n" % (sha256_file(full), name))
        total += os.path.getsize(full)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest(), total


def archive_digest(path, fmt):
    if fmt == "directory":
        return directory_digest(path)
    return sha256_file(path), os.path.getsize(path)


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def safe_file_name(name):
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "db"
    if cleaned != name:
        cleaned += "-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return cleaned


# -- running programs --------------------------------------------------------------------------

class Command:
    """One program, started at once; stderr goes to a temporary file (no pipe to fill up)."""

    def __init__(self, argv, env, scrub, stdin=None, stdout=None):
        self.argv = list(argv)
        self.scrub = scrub
        self._stderr = tempfile.TemporaryFile()
        self.capture = stdout is None
        try:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                self.argv, env=env, stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=subprocess.PIPE if self.capture else stdout, stderr=self._stderr, close_fds=True)
        except OSError as exc:
            self._stderr.close()
            raise PostgresError("cannot run %s: %s" % (os.path.basename(self.argv[0]), exc.strerror), cmd=self.argv)

    @property
    def pid(self):
        return self.proc.pid

    def wait(self):
        """(rc, stdout text, stderr text), all scrubbed of the password."""
        out = b""
        if self.proc.stdin is not None and self.proc.stdin.closed:
            self.proc.stdin = None  # communicate() would flush it
        if self.capture:
            out = self.proc.communicate()[0] or b""
        else:
            self.proc.wait()
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 65536))
        err = self._stderr.read().decode("utf-8", "replace")
        self._stderr.close()
        return self.proc.returncode, self.scrub(out.decode("utf-8", "replace")), self.scrub(err)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def command_error(what, argv, rc, out, err):
    if rc < 0:
        reason = "was killed by signal %d" % -rc
    else:
        reason = "failed (rc %d): %s" % (rc, last_line(err or out))
    return PostgresError("%s %s" % (what, reason), cmd=argv, rc=rc, stdout=out[-4000:], stderr=err)


# -- sessions: one connection, statements in order, rows as text -------------------------------

def _text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


class DirectSession:
    """A psycopg2 connection in autocommit mode."""

    def __init__(self, target, database):
        self.target = target
        try:
            self.conn = psycopg2.connect(
                host=target.host, port=target.port, user=target.user, password=target.password,
                dbname=database, connect_timeout=target.connect_timeout, application_name=APPLICATION_NAME,
                client_encoding="UTF8")
        except psycopg2.Error as exc:
            raise PostgresError("cannot connect to %s database %s: %s"
                                % (target.describe(), quote_ident(database), target.scrub(one_line(exc))))
        self.conn.autocommit = True

    def run(self, statement):
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement)
                if cur.description is None:
                    return []
                return [tuple(_text(value) for value in row) for row in cur.fetchall()]
        except psycopg2.Error as exc:
            # The primary message only, as psql's LAST_ERROR_MESSAGE gives it in compose mode.
            primary = getattr(getattr(exc, "diag", None), "message_primary", None)
            text = "ERROR: %s" % primary if primary else (exc.pgerror or str(exc))
            raise PostgresError(self.target.scrub(one_line(text)), sqlstate=getattr(exc, "pgcode", None) or "")

    def close(self):
        try:
            self.conn.close()
        except psycopg2.Error:
            pass


class PsqlSession:
    """One `psql` process inside the service's container, fed statement by statement on stdin.

    After each statement psql echoes a marker line with the ERROR and SQLSTATE variables, so
    an error does not end the session (ON_ERROR_STOP is off) and is reported for the statement
    that caused it. Rows arrive as CSV.
    """

    def __init__(self, target, database):
        self.target = target
        self.token = "lastgood-%s" % secrets.token_hex(8)
        argv = target.tool_argv("psql", ["-X", "-q", "--csv", "-t", "-v", "ON_ERROR_STOP=0"]
                                + target.connection_args() + ["--dbname=" + conninfo_dbname(database)])
        self.argv = argv
        self._stderr_lines = []
        try:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                argv, env=target.tool_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, close_fds=True)
        except OSError as exc:
            raise PostgresError("cannot run %s: %s" % (argv[0], exc.strerror), cmd=argv)
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()
        try:
            self.run("SET client_min_messages = warning")
            self.run("SET standard_conforming_strings = on")
        except PostgresError as exc:
            self.close()
            result = dict(exc.result, cmd=argv)
            reason = exc.msg if "stderr" not in result else last_line(result["stderr"])
            raise PostgresError("cannot connect to %s database %s: %s"
                                % (target.describe(), quote_ident(database), reason), **result)

    def _drain_stderr(self):
        for line in iter(self.proc.stderr.readline, b""):
            self._stderr_lines.append(line.decode("utf-8", "replace").rstrip("\n"))
            del self._stderr_lines[:-50]

    def _stderr_text(self):
        self._reader.join(timeout=2)
        return self.target.scrub("\n".join(self._stderr_lines))

    def run(self, statement):
        text = render(statement).rstrip().rstrip(";")
        script = "%s;\n\\echo %s-rows\n\\echo :LAST_ERROR_MESSAGE\n\\echo %s-status :ERROR :SQLSTATE\n" % (
            text, self.token, self.token)
        try:
            self.proc.stdin.write(script.encode("utf-8"))
            self.proc.stdin.flush()
        except (OSError, ValueError):
            self._died()
        rows_end = self.token + "-rows"
        status_prefix = self.token + "-status "
        data, message = [], []
        current = data
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self._died()
            line = line.decode("utf-8", "replace").rstrip("\n")
            if line == rows_end and current is data:
                current = message
            elif line.startswith(status_prefix) and current is message:
                failed, _sep, sqlstate = line[len(status_prefix):].partition(" ")
                break
            else:
                current.append(line)
        if failed == "true":
            raise PostgresError(self.target.scrub(one_line("ERROR: " + " ".join(message))), sqlstate=sqlstate)
        return [tuple(row) for row in csv.reader(io.StringIO("\n".join(data) + "\n")) if row] if data else []

    def _died(self):
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self._stderr_text()
        raise PostgresError("psql in service %s ended: %s" % (self.target.service, last_line(err)),
                            cmd=self.argv, rc=self.proc.returncode, stderr=err)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


# -- targets -----------------------------------------------------------------------------------

class Target:
    """Where the server is and how its programs run; see DirectTarget and ComposeTarget."""

    kind = None

    def __init__(self, module, params):
        self.module = module
        self.port = params.get("port") or 5432
        self.user = params.get("user") or "postgres"
        self.password = params.get("password") or None
        self.maintenance_db = params.get("maintenance_db") or "postgres"
        self.connect_timeout = params.get("connect_timeout") or 10
        self.bin_dir = params.get("bin_dir")
        check_identifier(self.maintenance_db, "maintenance_db")

    def scrub(self, text):
        if self.password and text:
            return text.replace(self.password, MASK)
        return text

    def tool_env(self):
        env = dict(os.environ)
        for name in ("PGPASSWORD", "PGDATABASE", "PGSERVICE", "PGOPTIONS"):
            env.pop(name, None)
        if self.password:
            env["PGPASSWORD"] = self.password
        env["PGCONNECT_TIMEOUT"] = str(self.connect_timeout)
        env["PGAPPNAME"] = APPLICATION_NAME
        env["PGCLIENTENCODING"] = "UTF8"
        return env

    def command(self, argv, stdin=None, stdout=None):
        return Command(argv, self.tool_env(), self.scrub, stdin=stdin, stdout=stdout)

    def run(self, argv, what, stdin=None, stdout=None):
        """Run a program to its end; PostgresError (cmd, rc, stderr) unless it exits 0."""
        proc = self.command(argv, stdin=stdin, stdout=stdout)
        rc, out, err = proc.wait()
        if rc != 0:
            raise command_error(what, argv, rc, out, err)
        return out, err


class DirectTarget(Target):
    kind = "direct"

    def __init__(self, module, params):
        super().__init__(module, params)
        self.host = params.get("host") or "127.0.0.1"

    def describe(self):
        return "%s@%s:%s" % (self.user, self.host, self.port)

    def session(self, database):
        return DirectSession(self, database)

    def binary(self, name):
        opt_dirs = [self.bin_dir] if self.bin_dir else []
        path = self.module.get_bin_path(name, required=False, opt_dirs=opt_dirs)
        if not path:
            raise PostgresError("%s not found on the managed host (install the PostgreSQL client programs "
                                "or set bin_dir)" % name)
        return path

    def tool_argv(self, tool, args):
        return [self.binary(tool)] + list(args)

    def connection_args(self):
        return ["--host", self.host, "--port", str(self.port), "--username", self.user, "--no-password"]

    def is_local_server(self, session):
        """Whether the server's data directory is on this host (same system identifier)."""
        try:
            directory = session.run("SELECT current_setting('data_directory')")[0][0]
            ident = session.run("SELECT system_identifier::text FROM pg_catalog.pg_control_system()")[0][0]
            with open(os.path.join(directory, "global", "pg_control"), "rb") as handle:
                local = struct.unpack("=Q", handle.read(8))[0]
        except (PostgresError, OSError, IndexError, struct.error):
            return False
        return str(local) == ident

    def filesystem(self, session, path, wal_path):
        """(available bytes at path, whether the WAL directory is on the same filesystem) or None."""
        if not self.is_local_server(session):
            return None
        try:
            stats = os.statvfs(path)
            same = os.stat(path).st_dev == os.stat(wal_path).st_dev
        except OSError:
            return None
        return stats.f_bavail * stats.f_frsize, same

    def container_dir(self):
        return None


class ComposeTarget(Target):
    kind = "compose"

    def __init__(self, module, params):
        super().__init__(module, params)
        self.host = params.get("host") or None
        self.service = params["service"]
        self.container_user = params.get("container_user") or "postgres"
        self.project = ComposeProject(module, params["project_dir"], params.get("files"), params.get("project_name"))
        try:
            services = self.project.services
        except ComposeError as exc:
            raise PostgresError(exc.msg, **exc.result)
        if self.service not in services:
            raise PostgresError("service %s is not in compose project %s" % (self.service, self.project.name))

    def describe(self):
        where = "%s:%s" % (self.host, self.port) if self.host else "local socket, port %s" % self.port
        return "%s@service %s of compose project %s (%s)" % (self.user, self.service, self.project.name, where)

    def session(self, database):
        return PsqlSession(self, database)

    def exec_argv(self, args, pg_env=False):
        argv = self.project.base_command() + ["exec", "-T", "--user", self.container_user]
        if pg_env:
            if self.password:
                argv += ["-e", "PGPASSWORD"]  # the name only: docker reads the value from our environment
            argv += ["-e", "PGCONNECT_TIMEOUT=%d" % self.connect_timeout, "-e", "PGAPPNAME=" + APPLICATION_NAME,
                     "-e", "PGCLIENTENCODING=UTF8"]
        return argv + [self.service] + list(args)

    def tool_argv(self, tool, args):
        program = posixpath.join(self.bin_dir, tool) if self.bin_dir else tool
        return self.exec_argv([program] + list(args), pg_env=True)

    def connection_args(self):
        args = ["--host", self.host] if self.host else []
        return args + ["--port", str(self.port), "--username", self.user, "--no-password"]

    def filesystem(self, session, path, wal_path):
        if self.host and self.host not in ("127.0.0.1", "localhost", "::1"):
            return None
        try:
            out, _err = self.run(self.exec_argv(["stat", "-L", "-f", "-c", "%a %S", path]), "stat")
            available, block = out.split()
            out, _err = self.run(self.exec_argv(["stat", "-L", "-c", "%d", path, wal_path]), "stat")
            devices = out.split()
            return int(available) * int(block), len(devices) == 2 and devices[0] == devices[1]
        except (PostgresError, ValueError):
            return None

    # A private directory inside the container, for archives pg_restore must seek in
    # (parallel restore, directory format) and for directory-format dumps.
    def container_dir(self):
        path = "/tmp/lastgood-%s" % secrets.token_hex(8)
        self.run(self.exec_argv(["mkdir", "-m", "0700", path]), "mkdir in the container")
        return path

    def remove_container_path(self, path):
        try:
            self.run(self.exec_argv(["rm", "-rf", "--", path]), "rm in the container")
        except PostgresError:
            pass

    def upload(self, local_path, container_dir, name):
        """Copy a file or a directory's files to <container_dir>/<name> (a tar stream into `tar -x`)."""
        argv = self.exec_argv(["tar", "-x", "-f", "-", "-C", container_dir])
        proc = self.command(argv, stdin=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.proc.stdin, mode="w|") as archive:
                archive.add(local_path, arcname=name, recursive=True)
            proc.proc.stdin.close()
        except (OSError, tarfile.TarError) as exc:
            proc.kill()
            rc, out, err = proc.wait()
            raise PostgresError("copying %s into the container failed: %s; %s" % (local_path, exc, last_line(err)),
                                cmd=argv, rc=rc, stderr=err)
        rc, out, err = proc.wait()
        if rc != 0:
            raise command_error("copying %s into the container" % local_path, argv, rc, out, err)
        return posixpath.join(container_dir, name)

    def download_directory(self, container_dir, name, local_dir):
        """Copy the regular files of <container_dir>/<name> into local_dir (which exists)."""
        argv = self.exec_argv(["tar", "-c", "-f", "-", "-C", container_dir, name])
        proc = self.command(argv, stdout=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.proc.stdout, mode="r|") as archive:
                for member in archive:
                    parts = member.name.split("/")
                    if member.isdir() and parts == [name]:
                        continue
                    if not member.isfile() or len(parts) != 2 or parts[0] != name or parts[1] in ("", ".", ".."):
                        raise PostgresError("unexpected entry %r in the dump directory" % member.name)
                    source = archive.extractfile(member)
                    with open(os.path.join(local_dir, parts[1]), "wb") as handle:
                        shutil.copyfileobj(source, handle, 1024 * 1024)
        except (OSError, tarfile.TarError) as exc:
            proc.kill()
            rc, out, err = proc.wait()
            raise PostgresError("copying the dump out of the container failed: %s; %s" % (exc, last_line(err)),
                                cmd=argv, rc=rc, stderr=err)
        except PostgresError:
            proc.kill()
            proc.wait()
            raise
        rc, out, err = proc.wait()
        if rc != 0:
            raise command_error("copying the dump out of the container", argv, rc, out, err)


def target_from_params(module, params):
    """A DirectTarget, or a ComposeTarget when `service` (with `project_dir`) is given.

    Raises PostgresError for an incomplete compose target or a compose project that cannot be read.
    """
    if not HAS_PSYCOPG2:
        raise PostgresError(missing_required_lib("psycopg2 (psycopg2-binary)"))
    if params.get("service") or params.get("project_dir"):
        if not (params.get("service") and params.get("project_dir")):
            raise PostgresError("a compose target needs both project_dir and service")
        return ComposeTarget(module, params)
    return DirectTarget(module, params)


# -- catalog queries ---------------------------------------------------------------------------

TABLES_QUERY = """
SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), c.reltuples::bigint::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY pg_catalog.pg_relation_size(c.oid) DESC, 3
"""


# What a database-wide ANALYZE covers beyond the tables counted: partitioned tables and materialized views.
ANALYZABLE_QUERY = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""


def user_tables(session):
    """[(schema, table, key, estimated rows)] of the tables whose rows a dump holds, largest first."""
    return session.run(TABLES_QUERY)


def count_statement(schema, table):
    return sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))


def database_names(session):
    return set(row[0] for row in session.run("SELECT datname FROM pg_catalog.pg_database"))


def database_info(session, database):
    """The live database's properties (pg_database row as JSON, owner, comment, ACL, settings), or None."""
    rows = session.run(sql.SQL(
        "SELECT to_jsonb(d)::text, pg_catalog.pg_get_userbyid(d.datdba), "
        "coalesce(pg_catalog.shobj_description(d.oid, 'pg_database'), ''), "
        "(pg_catalog.shobj_description(d.oid, 'pg_database') IS NULL)::int, "
        "coalesce(t.spcname, ''), pg_catalog.pg_database_size(d.oid)::text, d.datallowconn::int, "
        "(d.datacl IS NULL)::int "
        "FROM pg_catalog.pg_database d LEFT JOIN pg_catalog.pg_tablespace t ON t.oid = d.dattablespace "
        "WHERE d.datname = {}").format(sql.Literal(database)))
    if not rows:
        return None
    row = rows[0]
    info = dict(raw=json.loads(row[0]), owner=row[1], comment=None if row[3] == "1" else row[2],
                tablespace=row[4], size=int(row[5]), allow_connections=row[6] == "1", default_acl=row[7] == "1")
    info["acl"] = [] if info["default_acl"] else session.run(sql.SQL(
        "SELECT CASE WHEN a.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, "
        "a.privilege_type, a.is_grantable::int "
        "FROM pg_catalog.pg_database d, LATERAL pg_catalog.aclexplode(d.datacl) a WHERE d.datname = {}"
    ).format(sql.Literal(database)))
    info["settings"] = session.run(sql.SQL(
        "SELECT CASE WHEN s.setrole = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(s.setrole) END, c.entry "
        "FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase, "
        "LATERAL unnest(s.setconfig) AS c(entry) WHERE d.datname = {} ORDER BY 1, 2").format(sql.Literal(database)))
    return info


def create_database_statement(name, info, owner_default):
    """CREATE DATABASE with the owner, encoding, locale and tablespace of the live database."""
    parts = [sql.SQL("CREATE DATABASE {} WITH TEMPLATE template0").format(sql.Identifier(name))]
    if info is None:
        parts.append(sql.SQL("OWNER {}").format(sql.Identifier(owner_default)))
        return sql.SQL(" ").join(parts)
    raw = info["raw"]
    parts.append(sql.SQL("OWNER {}").format(sql.Identifier(info["owner"])))
    parts.append(sql.SQL("ENCODING {}").format(sql.Literal(raw.get("encoding_name") or "UTF8")))
    parts.append(sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(raw["datcollate"]), sql.Literal(raw["datctype"])))
    provider = raw.get("datlocprovider")
    if provider == "i":
        parts.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(
            sql.Literal(raw.get("daticulocale") or raw.get("datlocale"))))
    elif provider == "c":
        parts.append(sql.SQL("LOCALE_PROVIDER libc"))
    if info["tablespace"]:
        parts.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(info["tablespace"])))
    limit = raw.get("datconnlimit")
    if limit is not None and int(limit) >= 0:
        parts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(limit))))
    return sql.SQL(" ").join(parts)


def property_statements(name, info):
    """Statements giving database `name` the privileges and settings the live database has."""
    if info is None:
        return []
    statements = []
    if not info["default_acl"]:
        statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
            sql.Identifier(name), sql.Identifier(info["owner"])))
        for grantee, privilege, grantable in info["acl"]:
            if privilege not in DATABASE_PRIVILEGES:
                continue
            statements.append(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), sql.Identifier(name),
                sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION") if grantable == "1" else sql.SQL("")))
    for role, entry in info["settings"]:
        statements.append(setting_statement(name, role, entry))
    return statements


SWAP_FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.lastgood_swap(live text, scratch text, keep text, live_comment text,
                                                 allow_connections boolean, attempts int, wait_ms int)
RETURNS text LANGUAGE plpgsql AS $lastgood_swap$
DECLARE
  attempt int := 0;
  terminated int := 0;
  killed int;
  allow text := CASE WHEN allow_connections THEN 'true' ELSE 'false' END;
BEGIN
  LOOP
    attempt := attempt + 1;
    SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(a.pid)) INTO killed
      FROM pg_catalog.pg_stat_activity a
     WHERE a.datname IN (live, scratch) AND a.pid <> pg_catalog.pg_backend_pid();
    terminated := terminated + killed;
    -- Wait for them to be gone, polling every 10 ms (pg_terminate_backend's own timeout sleeps 100 ms at once);
    -- pg_stat_activity is read once per transaction unless its snapshot is cleared.
    FOR tick IN 1 .. wait_ms / 10 LOOP
      PERFORM pg_catalog.pg_stat_clear_snapshot();
      EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                            WHERE a.datname IN (live, scratch) AND a.pid <> pg_catalog.pg_backend_pid());
      PERFORM pg_catalog.pg_sleep(0.01);
    END LOOP;
    BEGIN
      IF keep IS NOT NULL THEN
        EXECUTE format('ALTER DATABASE %I RENAME TO %I', live, keep);
        EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS %s', keep, allow);
      END IF;
      EXECUTE format('ALTER DATABASE %I RENAME TO %I', scratch, live);
      EXECUTE format('ALTER DATABASE %I ALLOW_CONNECTIONS %s', live, allow);
      EXECUTE format('COMMENT ON DATABASE %I IS %L', live, live_comment);
      RETURN extract(epoch FROM pg_catalog.clock_timestamp())::text || ' ' || terminated;
    EXCEPTION WHEN object_in_use THEN
      IF attempt >= attempts THEN
        RAISE;
      END IF;
      PERFORM pg_catalog.pg_sleep(0.05);
    END;
  END LOOP;
END
$lastgood_swap$
"""


def server_epoch(session):
    return float(session.run("SELECT extract(epoch FROM pg_catalog.clock_timestamp())::text")[0][0])


def drop_database(session, name):
    session.run(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- parallel work on several sessions ---------------------------------------------------------

def run_parallel(target, database, jobs, items):
    """Run (key, statement) items on up to `jobs` sessions; {key: rows}. The first error is raised."""
    results = {}
    errors = []
    queue = list(items)
    lock = threading.Lock()

    def worker(session):
        try:
            while True:
                with lock:
                    if errors or not queue:
                        return
                    key, statement = queue.pop(0)
                rows = session.run(statement)
                with lock:
                    results[key] = rows
        except PostgresError as exc:
            with lock:
                errors.append(exc)
        finally:
            session.close()

    count = max(1, min(int(jobs or 1), len(queue)))
    sessions = []
    try:
        for _index in range(count):
            sessions.append(target.session(database))
    except PostgresError:
        for session in sessions:
            session.close()
        raise
    threads = [threading.Thread(target=worker, args=(session,), daemon=True) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# -- dump --------------------------------------------------------------------------------------

def _dump_argv(target, database, fmt, jobs, compress, snapshot, output):
    args = ["--format=" + fmt, "--snapshot=" + snapshot] + target.connection_args()
    if compress is not None:
        args.append("--compress=%d" % compress)
    if fmt == "directory" and jobs > 1:
        args.append("--jobs=%d" % jobs)
    if output:
        args.append("--file=" + output)
    args.append("--dbname=" + conninfo_dbname(database))
    return target.tool_argv("pg_dump", args)


def check_dump_options(fmt, jobs, compress):
    if fmt not in FORMATS:
        raise PostgresError("format must be one of %s" % ", ".join(FORMATS))
    if int(jobs or 1) < 1:
        raise PostgresError("jobs must be at least 1")
    if int(jobs or 1) > 1 and fmt != "directory":
        raise PostgresError("parallel dumps (jobs > 1) need format=directory")
    if compress is not None and not 0 <= int(compress) <= 9:
        raise PostgresError("compress must be between 0 and 9")


def dump_plan(module, target, database, dest_path, fmt="custom", jobs=1, compress=None):
    """What dump_database would do (check mode): the tables with estimated rows; changes nothing."""
    check_identifier(database)
    check_dump_options(fmt, jobs, compress)
    session = target.session(database)
    try:
        version = session.run("SELECT current_setting('server_version')")[0][0]
        tables = dict((row[2], max(0, int(row[3]))) for row in user_tables(session))
    finally:
        session.close()
    return dict(database=database, file=os.path.basename(dest_path.rstrip("/")), format=fmt, server_version=version,
                estimated_tables=tables, compress=compress, jobs=jobs)


def dump_database(module, target, database, dest_path, fmt="custom", jobs=1, compress=None, overwrite=False):
    """Dump `database` to dest_path (a file, or a directory for format=directory).

    The row counts come from the very snapshot pg_dump dumps: a REPEATABLE READ transaction
    exports its snapshot (pg_export_snapshot), pg_dump starts with --snapshot=<id>, and the same
    transaction counts every table while pg_dump runs. The dump is written next to dest_path and
    renamed into place once complete; an existing dest_path is refused unless `overwrite`.

    Returns dict(database, file, format, sha256, size, server_version, tables={"schema.table": rows},
    dumped_at, compress, database_size, timings). Raises PostgresError (nothing left behind).
    """
    check_identifier(database)
    jobs = int(jobs or 1)
    check_dump_options(fmt, jobs, compress)
    dest_path = os.path.abspath(dest_path.rstrip("/") or dest_path)
    if os.path.lexists(dest_path) and not overwrite:
        raise PostgresError("%s exists already; refusing to overwrite a dump" % dest_path)
    parent = os.path.dirname(dest_path)
    if not os.path.isdir(parent):
        raise PostgresError("directory %s does not exist" % parent)
    partial = os.path.join(parent, ".%s.partial-%s" % (os.path.basename(dest_path), secrets.token_hex(4)))
    timings = {}
    started = time.monotonic()
    session = target.session(database)
    container_dir = None
    proc = None
    output_file = None
    try:
        session.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        version, size = session.run("SELECT current_setting('server_version'), "
                                    "pg_catalog.pg_database_size(current_database())::text")[0]
        snapshot = session.run("SELECT pg_catalog.pg_export_snapshot()")[0][0]
        tables = user_tables(session)
        # One core for the counts: parallel workers would take CPU from pg_dump's compression.
        session.run("SET max_parallel_workers_per_gather = 0")
        moment = utc_now()

        # The dump holds the data: readable by its owner only from its first byte (pg_dump keeps the
        # mode of the file it writes into; the directory format's directory it makes 0700 itself).
        if target.kind == "direct":
            argv = _dump_argv(target, database, fmt, jobs, compress, snapshot, partial)
            if fmt == "custom":
                create_private(partial).close()
            proc = target.command(argv)
        elif fmt == "custom":
            argv = _dump_argv(target, database, fmt, jobs, compress, snapshot, None)
            output_file = create_private(partial)
            proc = target.command(argv, stdout=output_file)
        else:
            container_dir = target.container_dir()
            argv = _dump_argv(target, database, fmt, jobs, compress, snapshot, posixpath.join(container_dir, "dump"))
            proc = target.command(argv)

        # Count in the exporting transaction while pg_dump runs: the same snapshot, another core.
        counted = time.monotonic()
        counts = {}
        try:
            for schema, table, key, _estimate in tables:
                counts[key] = int(session.run(count_statement(schema, table))[0][0])
        except BaseException:
            proc.kill()
            raise
        finally:
            timings["count_s"] = round(time.monotonic() - counted, 3)
            rc, out, err = proc.wait()
        if rc != 0:
            raise command_error("pg_dump", argv, rc, out, err)
        session.run("COMMIT")
        timings["pg_dump_s"] = round(time.monotonic() - counted, 3)

        if container_dir is not None:
            os.mkdir(partial, 0o700)
            target.download_directory(container_dir, "dump", partial)
        hashed = time.monotonic()
        digest, total = archive_digest(partial, fmt)
        timings["sha256_s"] = round(time.monotonic() - hashed, 3)
        if overwrite and os.path.lexists(dest_path):
            remove_path(dest_path)
        os.rename(partial, dest_path)
    except BaseException:
        if proc is not None:
            proc.kill()
        remove_path(partial)
        raise
    finally:
        if output_file is not None:
            output_file.close()
        session.close()
        if container_dir is not None:
            target.remove_container_path(container_dir)
    timings["total_s"] = round(time.monotonic() - started, 3)
    return dict(database=database, file=os.path.basename(dest_path), format=fmt, sha256=digest, size=total,
                server_version=version, tables=counts, dumped_at=isoformat(moment), compress=compress,
                database_size=int(size), timings=timings)


# -- restore -----------------------------------------------------------------------------------

class Restore:
    """One restore_database() run: verify, plan, then (unless check mode) restore and swap."""

    def __init__(self, module, target, database, archive_path, recorded, snapshot_id, jobs, keep_previous,
                 check_mode, in_place_if_no_room, space_check, safety_dump_dir, around_swap=None):
        self.module = module
        # Called around the moment the live database goes away (the swap, or an in-place
        # drop): a context manager factory, e.g. stopping the services that use it.
        self.around_swap = around_swap or contextlib.nullcontext
        self.target = target
        self.database = check_identifier(database)
        self.archive = os.path.abspath(archive_path)
        self.recorded = recorded
        try:
            self.snapshot_id = check_safe_name(snapshot_id)
        except ManifestError as exc:
            raise PostgresError(str(exc))
        self.jobs = max(1, int(jobs or 1))
        self.keep_previous = keep_previous
        self.check_mode = check_mode
        self.in_place_if_no_room = in_place_if_no_room
        self.space_check = space_check
        self.safety_dump_dir = safety_dump_dir or os.path.dirname(self.archive)
        self.scratch = scratch_name(database)
        self.fmt = check_recorded(recorded)
        self.plan = []
        self.actions = []
        self.timings = {}
        self.result = dict(database=database, snapshot_id=self.snapshot_id, scratch=self.scratch, in_place=False,
                           safety_copy=None, safety_dump=None, leftovers_dropped=[], terminated_sessions=0)
        self.maintenance = None
        self.container_dir = None
        self.staged_archive = None
        self.staged_count = 0
        self.info = None
        self.existing = set()
        self.keep_name = None
        self.leftover_size = 0
        self.blocked = False

    # -- helpers ---------------------------------------------------------------------------
    def step(self, text):
        self.plan.append(text)

    def done(self, text):
        self.actions.append(text)

    def timed(self, name, started):
        self.timings[name] = round(time.monotonic() - started, 3)

    def failure(self, exc, prefix):
        result = dict(exc.result)
        result.update(self.result, actions=self.actions, plan=self.plan, timings=self.timings)
        return PostgresError("%s: %s" % (prefix, exc.msg), **result)

    # -- before anything changes -----------------------------------------------------------
    def check_archive_exists(self):
        if self.fmt == "directory" and not os.path.isdir(self.archive):
            raise PostgresError("archive %s is not a directory (recorded format: directory)" % self.archive)
        if self.fmt == "custom" and not os.path.isfile(self.archive):
            raise PostgresError("archive %s does not exist or is not a file" % self.archive)

    def verify_archive(self):
        """sha256 against the record and a complete read (pg_restore -f /dev/null), side by side."""
        self.step("verify the sha256 of %s against the recorded %s..." % (self.archive, self.recorded["sha256"][:12]))
        self.step("read the whole archive (pg_restore -f /dev/null%s) to prove it complete"
                  % (", %d processes" % self.jobs if self.jobs > 1 else ""))
        started = time.monotonic()
        digest = {}

        def hash_archive():
            begun = time.monotonic()
            try:
                digest["value"] = archive_digest(self.archive, self.fmt)
            except (OSError, PostgresError) as exc:
                digest["error"] = str(getattr(exc, "msg", exc))
            digest["seconds"] = round(time.monotonic() - begun, 3)

        hasher = threading.Thread(target=hash_archive, daemon=True)
        hasher.start()
        read_started = time.monotonic()
        read_error = None
        try:
            self.staged_archive = self.full_read(self.archive, self.fmt)
        except PostgresError as exc:
            read_error = exc
        self.timings["full_read_s"] = round(time.monotonic() - read_started, 3)
        hasher.join()
        self.timings["sha256_s"] = digest["seconds"]
        self.timed("verify_archive_s", started)
        if "error" in digest:
            raise PostgresError("cannot read archive %s: %s" % (self.archive, digest["error"]))
        sha, size = digest["value"]
        self.result["archive"] = dict(path=self.archive, format=self.fmt, sha256=sha, size=size)
        if sha != self.recorded["sha256"]:
            raise PostgresError("archive %s does not match its recorded sha256 (recorded %s, found %s): "
                                "it is damaged or not the recorded dump" % (self.archive, self.recorded["sha256"][:12], sha[:12]))
        if read_error is not None:
            raise PostgresError("archive %s cannot be read completely: %s" % (self.archive, read_error.msg),
                                **read_error.result)
        self.done("verified archive %s: sha256 matches, read completely" % self.archive)

    def stage(self, local, fmt):
        """Where pg_restore reads `local` from: the path itself (direct), a copy inside the container
        (compose, when pg_restore must seek: directory format or parallel jobs), or None (compose:
        streamed on stdin)."""
        if self.target.kind == "direct":
            return local
        if fmt != "directory" and self.jobs == 1:
            return None
        if self.container_dir is None:
            self.container_dir = self.target.container_dir()
        self.staged_count += 1
        return self.target.upload(local, self.container_dir, "archive-%d" % self.staged_count)

    def pg_restore(self, args, local, staged, what):
        stdin = None
        if staged is None:
            stdin = open(local, "rb")  # pylint: disable=consider-using-with
        else:
            args = args + [staged]
        argv = self.target.tool_argv("pg_restore", args)
        try:
            self.target.run(argv, what, stdin=stdin)
        finally:
            if stdin is not None:
                stdin.close()

    def full_read(self, local, fmt, tables=None):
        """pg_restore -f /dev/null: every byte of the archive decoded; returns where it was staged.

        With jobs > 1 the archive's entries are split into `jobs` lists (pg_restore --use-list),
        each data entry in exactly one, read by as many pg_restore processes side by side."""
        staged = self.stage(local, fmt)
        lists = []
        if self.jobs > 1 and staged is not None:
            argv = self.target.tool_argv("pg_restore", ["--list", staged])
            listing, _err = self.target.run(argv, "pg_restore --list")
            lists = split_toc(listing, self.recorded["tables"] if tables is None else tables, self.jobs)
        if not lists:
            self.pg_restore(["--file=/dev/null"], local, staged, "pg_restore (full read)")
            return staged
        list_dir = tempfile.mkdtemp(prefix="lastgood-toc-")
        try:
            for number, text in enumerate(lists):
                with open(os.path.join(list_dir, "part-%d.list" % number), "w", encoding="utf-8") as handle:
                    handle.write(text)
            where = list_dir
            if self.target.kind == "compose":
                where = self.target.upload(list_dir, self.container_dir, "toc-%d" % self.staged_count)
            procs = [(argv, self.target.command(argv)) for argv in (
                self.target.tool_argv("pg_restore", ["--file=/dev/null", "--use-list=" + posixpath.join(
                    where, "part-%d.list" % number), staged]) for number in range(len(lists)))]
            failures = []
            for argv, proc in procs:
                rc, out, err = proc.wait()
                if rc != 0:
                    failures.append(command_error("pg_restore (full read)", argv, rc, out, err))
            if failures:
                raise failures[0]
        finally:
            shutil.rmtree(list_dir, ignore_errors=True)
        return staged

    def restore_into(self, database, local, staged):
        args = ["--exit-on-error"] + self.target.connection_args() + ["--dbname=" + conninfo_dbname(database)]
        if self.jobs > 1:
            args.append("--jobs=%d" % self.jobs)
        self.pg_restore(args, local, staged, "pg_restore")

    def inspect_server(self):
        """Connect, take the per-database restore lock, read the live database and the disk."""
        session = self.maintenance
        if self.database == self.target.maintenance_db:
            raise PostgresError("cannot restore the maintenance database %s itself; set maintenance_db to another "
                                "database (e.g. template1)" % quote_ident(self.database))
        self.result["server_version"] = session.run("SELECT current_setting('server_version')")[0][0]
        locked = session.run(sql.SQL("SELECT pg_catalog.pg_try_advisory_lock({})::int").format(
            sql.Literal(advisory_key(self.database))))[0][0]
        if locked != "1":
            raise PostgresError("another restore of database %s is running" % quote_ident(self.database))
        self.existing = database_names(session)
        self.info = database_info(session, self.database) if self.database in self.existing else None
        if self.info is not None and self.info["raw"].get("datistemplate"):
            raise PostgresError("database %s is a template; refusing to replace it" % quote_ident(self.database))
        if self.info is not None:
            self.keep_name = safety_copy_name(self.database, self.snapshot_id, self.existing)
        for name in (self.scratch, self.keep_name):
            if name:
                check_identifier(name)

    def leftover(self):
        """A scratch database left by an interrupted run, and whether the live one is still blocked by it."""
        if self.scratch not in self.existing:
            return None
        rows = self.maintenance.run(sql.SQL(
            "SELECT coalesce(pg_catalog.shobj_description(oid, 'pg_database'), ''), "
            "pg_catalog.pg_database_size(oid)::text FROM pg_catalog.pg_database WHERE datname = {}").format(
                sql.Literal(self.scratch)))
        allowed = marker_allows_connections(rows[0][0] if rows else "")
        self.leftover_size = int(rows[0][1]) if rows else 0
        unblock = bool(self.info is not None and allowed and not self.info["allow_connections"])
        return unblock

    def check_space(self):
        size = int(self.recorded.get("database_size") or (self.info or {}).get("size") or 0)
        session = self.maintenance
        tablespace = (self.info or {}).get("tablespace") or ""
        try:
            data_dir = session.run("SELECT current_setting('data_directory')")[0][0]
            location = ""
            if tablespace and tablespace not in ("pg_default", "pg_global"):
                location = session.run(sql.SQL("SELECT pg_catalog.pg_tablespace_location(oid) FROM pg_catalog.pg_tablespace "
                                               "WHERE spcname = {}").format(sql.Literal(tablespace)))[0][0]
            max_wal = int(session.run("SELECT setting::bigint * CASE unit WHEN 'MB' THEN 1048576 WHEN 'kB' THEN 1024 "
                                      "ELSE 1 END FROM pg_catalog.pg_settings WHERE name = 'max_wal_size'")[0][0])
        except (PostgresError, IndexError, ValueError) as exc:
            measured = None
            reason = getattr(exc, "msg", str(exc))
        else:
            path = location or posixpath.join(data_dir, "base")
            measured = self.target.filesystem(session, path, posixpath.join(data_dir, "pg_wal"))
            reason = "the server's data directory is not reachable from here"
        space = dict(database_size=size, tablespace=tablespace or "pg_default")
        self.result["space"] = space
        if measured is None:
            space["checked"] = False
            if self.space_check:
                raise PostgresError("cannot measure the free space of the server's disk (%s); run the module on the "
                                    "database host or through its compose service, or set space_check=false"
                                    % reason)
            self.step("free space not checked (space_check=false)")
            return "scratch"
        available, same_fs = measured
        available += self.leftover_size  # a leftover scratch database is dropped first
        need = space_needed(size, same_fs, max_wal)
        space.update(checked=True, path=location or posixpath.join(data_dir, "base"), available=available,
                     needed=need, wal_on_same_filesystem=same_fs, leftover_scratch=self.leftover_size)
        if available >= need:
            self.step("room for a second copy: %s needed, %s free" % (human_bytes(need), human_bytes(available)))
            return "scratch"
        if not self.space_check:
            self.step("not enough room for a second copy (%s needed, %s free); restoring anyway (space_check=false)"
                      % (human_bytes(need), human_bytes(available)))
            return "scratch"
        if not self.in_place_if_no_room:
            raise PostgresError("not enough room for a second copy of %s: %s needed, %s free on %s; free space, or "
                                "set in_place_if_no_room to restore in place after a safety dump"
                                % (quote_ident(self.database), human_bytes(need), human_bytes(available), space["path"]))
        if self.info is None or available + self.info["size"] < need:
            raise PostgresError("not enough room even in place: %s needed, %s free plus %s of the current database"
                                % (human_bytes(need), human_bytes(available), human_bytes((self.info or {}).get("size", 0))))
        self.step("no room for a second copy (%s needed, %s free): restoring in place after a safety dump"
                  % (human_bytes(need), human_bytes(available)))
        return "in_place"

    def build_plan(self, mode, unblock):
        db = quote_ident(self.database)
        if unblock is not None:
            self.step("drop the leftover scratch database %s of an interrupted restore%s"
                      % (self.scratch, " and let %s accept connections again" % db if unblock else ""))
        if mode == "in_place":
            self.step("take a safety dump of %s into %s and verify it" % (db, self.safety_dump_dir))
            self.step("block new connections to %s, terminate its sessions and drop it" % db)
        self.step("create the scratch database %s with the owner, encoding, locale and tablespace of %s"
                  % (self.scratch, db))
        self.step("restore the archive into %s (pg_restore --exit-on-error%s)"
                  % (self.scratch, " --jobs=%d" % self.jobs if self.jobs > 1 else ""))
        self.step("verify %s: %d tables with the recorded row counts; ANALYZE" % (self.scratch, len(self.recorded["tables"])))
        if self.info is not None:
            self.step("copy the privileges and settings of %s to %s" % (db, self.scratch))
        if mode == "in_place" or self.info is None:
            self.step("rename %s to %s" % (self.scratch, db))
        else:
            self.step("block new connections to %s, terminate its sessions, rename %s to %s and %s to %s"
                      % (db, db, quote_ident(self.keep_name), self.scratch, db))
            if self.keep_previous:
                self.step("keep %s as the safety copy until it is dropped" % quote_ident(self.keep_name))
            else:
                self.step("drop the previous database %s" % quote_ident(self.keep_name))
        if mode == "in_place":
            self.step("if the restore fails: restore the safety dump the same way")

    # -- the changes -----------------------------------------------------------------------
    def drop_leftover(self, unblock):
        if unblock:
            self.maintenance.run(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(self.database)))
            self.info["allow_connections"] = True
            self.done("let %s accept connections again (blocked by an interrupted restore)" % quote_ident(self.database))
        drop_database(self.maintenance, self.scratch)
        self.existing.discard(self.scratch)
        self.result["leftovers_dropped"].append(self.scratch)
        self.done("dropped the leftover scratch database %s" % self.scratch)

    def create_scratch(self):
        allow = True if self.info is None else self.info["allow_connections"]
        self.maintenance.run(create_database_statement(self.scratch, self.info, self.target.user))
        self.maintenance.run(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(self.scratch), sql.Literal(scratch_marker(self.database, self.snapshot_id, allow))))
        self.done("created the scratch database %s" % self.scratch)

    def verify_restored(self, database, expected):
        """Count every table and ANALYZE every analyzable relation, largest first, spread over
        max(2, jobs) sessions; compare the counts with `expected`."""
        session = self.target.session(database)
        try:
            tables = user_tables(session)
            others = session.run(ANALYZABLE_QUERY)
        finally:
            session.close()
        # ANALYZE costs far more than a count: the analyses first, largest tables first, then the counts.
        items = [(("analyze", key), sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))
                 for schema, table, key, _est in tables]
        items += [(("analyze", schema, relation), sql.SQL("ANALYZE {}").format(sql.Identifier(schema, relation)))
                  for schema, relation in others]
        items += [(("count", key), count_statement(schema, table)) for schema, table, key, _est in tables]
        results = run_parallel(self.target, database, max(2, self.jobs), items)
        found = dict((key[1], int(rows[0][0])) for key, rows in results.items() if key[0] == "count")
        problems = compare_tables(expected, found)
        if problems:
            raise PostgresError("restored database does not match the dump: %s" % "; ".join(problems))
        return found

    def swap(self, keep):
        """Block new connections to the live database, end its sessions and rename atomically."""
        session = self.maintenance
        session.run(SWAP_FUNCTION)
        comment = None if self.info is None else self.info["comment"]
        allow = True if self.info is None else self.info["allow_connections"]
        blocked_at = None
        if keep is not None:
            blocked_at = server_epoch(session)
            session.run(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(self.database)))
            self.blocked = True
        row = session.run(sql.SQL("SELECT pg_temp.lastgood_swap({}, {}, {}, {}, {}, {}, {})").format(
            sql.Literal(self.database), sql.Literal(self.scratch), sql.Literal(keep), sql.Literal(comment),
            sql.Literal(allow), sql.Literal(SWAP_ATTEMPTS), sql.Literal(TERMINATE_WAIT_MS)))[0][0]
        self.blocked = False
        finished, terminated = row.split()
        self.result["terminated_sessions"] = int(terminated)
        if blocked_at is not None:
            self.result["swap_window_s"] = round(float(finished) - blocked_at, 3)

    def unblock(self):
        if not self.blocked:
            return
        try:
            session = self.target.session(self.target.maintenance_db)
            try:
                session.run(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(self.database), sql.SQL("true" if self.info["allow_connections"] else "false")))
            finally:
                session.close()
            self.blocked = False
        except PostgresError:
            pass

    def drop_scratch(self):
        try:
            session = self.target.session(self.target.maintenance_db)
            try:
                drop_database(session, self.scratch)
            finally:
                session.close()
            return True
        except PostgresError:
            return False

    def build_scratch(self, local, staged, expected):
        started = time.monotonic()
        self.create_scratch()
        self.restore_into(self.scratch, local, staged)
        self.timed("restore_s", started)
        self.done("restored the archive into %s" % self.scratch)
        started = time.monotonic()
        found = self.verify_restored(self.scratch, expected)
        self.timed("verify_s", started)
        self.result["tables"] = found
        self.done("verified %s: %d tables, row counts as recorded; analyzed" % (self.scratch, len(found)))
        for statement in property_statements(self.scratch, self.info):
            self.maintenance.run(statement)

    def take_safety_dump(self):
        """A verified dump of the live database before it is dropped (never overwriting one)."""
        name = "%s%s%s" % (safe_file_name(self.database), SAFETY_INFIX, self.snapshot_id)
        path = os.path.join(self.safety_dump_dir, name + ".dump")
        number = 1
        while os.path.lexists(path):
            number += 1
            path = os.path.join(self.safety_dump_dir, "%s_%d.dump" % (name, number))
        started = time.monotonic()
        dumped = dump_database(self.module, self.target, self.database, path)
        dumped["path"] = path
        self.result["safety_dump"] = dumped
        staged = self.full_read(path, "custom", dumped["tables"])
        self.timed("safety_dump_s", started)
        self.done("took the safety dump %s and read it completely" % path)
        return dumped, staged

    def run_in_place(self):
        with self.around_swap():
            self._run_in_place()

    def _run_in_place(self):
        dumped, in_container = self.take_safety_dump()
        db = sql.Identifier(self.database)
        try:
            self.maintenance.run(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(db))
            self.blocked = True
            drop_database(self.maintenance, self.database)  # WITH (FORCE): terminates its sessions first
        except PostgresError as exc:
            # Refused (prepared transactions, a replication slot, a lock timeout): the database is
            # still there, so it must accept connections again as it did.
            self.unblock()
            raise self.failure(exc, "could not drop %s, it is untouched%s (its safety dump is %s)" % (
                quote_ident(self.database), "" if not self.blocked else " but still refuses connections",
                dumped["path"]))
        self.blocked = False
        self.done("dropped %s (its safety dump is %s)" % (quote_ident(self.database), dumped["path"]))
        try:
            self.build_scratch(self.archive, self.staged_archive, self.recorded["tables"])
            self.swap(None)
        except PostgresError as exc:
            self.drop_scratch()
            self.done("restore failed (%s); restoring the safety dump" % exc.msg)
            try:
                self.build_scratch(dumped["path"], in_container, dumped["tables"])
                self.swap(None)
            except PostgresError as again:
                self.drop_scratch()
                raise self.failure(again, "restore failed (%s) and so did restoring the safety dump %s; the database "
                                   "is gone, restore it by hand from that dump" % (exc.msg, dumped["path"]))
            raise self.failure(exc, "restore failed; %s was put back from the safety dump %s"
                               % (quote_ident(self.database), dumped["path"]))
        self.done("renamed %s to %s" % (self.scratch, quote_ident(self.database)))

    def run_with_scratch(self):
        try:
            self.build_scratch(self.archive, self.staged_archive, self.recorded["tables"])
            with self.around_swap():
                started = time.monotonic()
                self.swap(self.keep_name)
                self.timed("swap_s", started)
        except BaseException as exc:
            self.unblock()
            dropped = self.drop_scratch()
            if isinstance(exc, PostgresError):
                note = "%s is untouched" % (quote_ident(self.database) if self.info else "the database")
                if not dropped:
                    note += "; the scratch database %s could not be dropped" % self.scratch
                raise self.failure(exc, "restore failed, %s" % note)
            raise
        if self.keep_name:
            self.result["safety_copy"] = self.keep_name
            self.done("swapped: %s is the restored database, %s the previous one"
                      % (quote_ident(self.database), quote_ident(self.keep_name)))
            if not self.keep_previous:
                drop_database(self.maintenance, self.keep_name)
                self.result["safety_copy"] = None
                self.done("dropped the previous database %s" % quote_ident(self.keep_name))
        else:
            self.done("renamed %s to %s" % (self.scratch, quote_ident(self.database)))

    def diff(self):
        before = "database %s: absent\n" % self.database
        if self.info is not None:
            before = "database %s (%s)\n" % (self.database, human_bytes(self.info["size"]))
            try:
                session = self.target.session(self.database)
                try:
                    tables = user_tables(session)
                finally:
                    session.close()
                before += "".join("  %s: ~%d rows (estimated)\n" % (row[2], max(0, int(row[3]))) for row in tables)
            except PostgresError as exc:
                before += "  (tables not listed: %s)\n" % exc.msg
        after = "database %s from snapshot %s\n" % (self.database, self.snapshot_id)
        after += "".join("  %s: %s rows\n" % (key, rows) for key, rows in sorted(self.recorded["tables"].items()))
        return dict(before=before, after=after)

    def run(self):
        started = time.monotonic()
        try:
            try:
                self.check_archive_exists()
                self.maintenance = self.target.session(self.target.maintenance_db)
                self.inspect_server()
                self.verify_archive()
                unblock = self.leftover()
                mode = self.check_space()
            except PostgresError as exc:
                raise self.failure(exc, "refused before any change")
            self.build_plan(mode, unblock)
            self.result["in_place"] = mode == "in_place"
            self.result["diff"] = self.diff()
            if self.check_mode:
                self.result.update(changed=True, plan=self.plan, actions=self.actions, timings=self.timings)
                return self.result
            if unblock is not None:
                self.drop_leftover(unblock)
            if mode == "in_place":
                self.run_in_place()
            else:
                self.run_with_scratch()
        finally:
            if self.maintenance is not None:
                self.maintenance.close()
            if self.container_dir is not None:
                self.target.remove_container_path(self.container_dir)
        self.timed("total_s", started)
        self.result.update(changed=True, plan=self.plan, actions=self.actions, timings=self.timings)
        return self.result


def restore_database(module, target, database, archive_path, recorded, snapshot_id, jobs=1, keep_previous=True,
                     check_mode=False, in_place_if_no_room=False, space_check=True, safety_dump_dir=None,
                     around_swap=None):
    """Restore `database` from a dump made by dump_database(), proving every step.

    Before anything changes: the archive's sha256 must equal recorded["sha256"] and pg_restore must
    read it completely; the server must be reachable, no other restore of the database running,
    and the disk must have room for a second copy (else refused, unless in_place_if_no_room).
    Then: a scratch database is restored with --exit-on-error, its tables and row counts must
    equal recorded["tables"], it is analyzed, given the live database's privileges and settings,
    and swapped in by two renames in one transaction after new connections were blocked and open
    sessions terminated. The previous database stays as `<database>_before_<snapshot_id>` unless
    keep_previous is false. On any failure the live database is untouched (and accepts
    connections as before) and the scratch database is dropped.

    check_mode verifies the archive and returns the plan, changing nothing. `around_swap`, a
    context manager factory, is entered just before the live database goes away and left
    right after (also on failure): the services that use the database stop only for that.
    Returns dict(changed, actions, plan, database, snapshot_id, scratch, safety_copy, in_place,
    archive, space, tables, terminated_sessions, swap_window_s, timings, ...). Raises PostgresError.
    """
    restore = Restore(module, target, database, archive_path, recorded, snapshot_id, jobs, keep_previous, check_mode,
                      in_place_if_no_room, space_check, safety_dump_dir, around_swap)
    return restore.run()


def drop_previous(module, target, database, snapshot_id, check_mode=False):
    """Drop the safety copies `<database>_before_<snapshot_id>` (and _N variants) a restore kept."""
    check_identifier(database)
    try:
        check_safe_name(snapshot_id)
    except ManifestError as exc:
        raise PostgresError(str(exc))
    session = target.session(target.maintenance_db)
    try:
        names = safety_copies(database, snapshot_id, database_names(session))
        if not check_mode:
            for name in names:
                drop_database(session, name)
    finally:
        session.close()
    return dict(changed=bool(names), dropped=names,
                actions=["drop the safety copy %s" % quote_ident(name) for name in names])
