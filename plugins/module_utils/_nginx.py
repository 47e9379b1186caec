# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blue-green switching through nginx: the managed upstream file, its validation inside the
running nginx container, the reload (never a restart) and the marker of the live color.

The order of a switch is what keeps traffic safe: the new upstream file is written beside the
old one and renamed over it, `nginx -t` runs inside the container; if it fails, the old bytes
are put back and nothing is reloaded, so nginx keeps serving the live color. Only a validated
file is followed by `nginx -s reload`, and the switch counts as done when nginx's new workers
serve and the old ones have stopped accepting (graceful: requests in progress finish).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import tempfile
import time

from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    APIError,
    DockerException,
    one_line,
    project_containers,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError

POLL_INTERVAL_S = 0.05
MANAGED_HEADER = "# Managed by lastgood.rollback.nginx_upstream: live color %s.\n"
# One server entry: an address and optional parameters (weight=2, max_fails=0, backup...),
# single spaces between them. Nothing that could end the directive or open a block
# (; { } # quotes, newlines) gets into the file; what nginx itself would refuse (a bad port)
# is left to `nginx -t`, which then keeps the old file.
_SERVER_ENTRY = re.compile(r"^[A-Za-z0-9_.:\[\]/=-]+( [A-Za-z0-9_.:\[\]/=-]+)*$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# With `error_log stderr`, nginx prefixes its messages with a time and pid#tid: dropped.
_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: ")
_SERVER_LINE = re.compile(r"^\s*server\s+([^;]+);", re.MULTILINE)
WORKER_TITLE = "nginx: worker process"
SHUTTING_DOWN = "is shutting down"


class NginxError(StepError):
    """A refused or failed switch; `msg` is one line, `result` the details."""


# -- pure logic --------------------------------------------------------------------------

def normalize_colors(colors):
    """{color: [server entry, ...]} from the option (a string or a list per color); raises NginxError."""
    if not colors:
        raise NginxError("colors is empty: give each color the server address(es) of its copy of the service")
    normalized = {}
    for color, servers in colors.items():
        if not _NAME.match(str(color)):
            raise NginxError("color name %r: use letters, digits, '-' and '_' only" % (color,))
        entries = [servers] if isinstance(servers, str) else list(servers or [])
        if not entries:
            raise NginxError("color %s has no server address" % color)
        cleaned = []
        for entry in entries:
            text = " ".join(str(entry).split())
            if not _SERVER_ENTRY.match(text):
                raise NginxError("color %s: server entry %r is not a plain address with optional parameters" % (color, entry))
            cleaned.append(text)
        normalized[str(color)] = cleaned
    return normalized


def render_upstream(upstream_name, color, servers):
    """The whole managed file for `color`."""
    lines = [MANAGED_HEADER % color, "upstream %s {\n" % upstream_name]
    lines += ["    server %s;\n" % entry for entry in servers]
    lines.append("}\n")
    return "".join(lines)


def servers_in(text):
    """The server entries of the upstream file (whitespace normalized), in order."""
    return [" ".join(match.split()) for match in _SERVER_LINE.findall(text or "")]


def color_of_servers(colors, servers):
    """The color whose servers are exactly `servers` (order aside), else None."""
    found = [color for color, entries in colors.items() if sorted(entries) == sorted(servers)]
    return found[0] if len(found) == 1 else None


def choose_target(colors, requested, live):
    """The color to switch to: `requested`, or with two colors and none requested, the other one."""
    if requested:
        if requested not in colors:
            raise NginxError("color %s is not one of the colors (%s)" % (requested, ", ".join(sorted(colors))))
        return requested
    if len(colors) != 2:
        raise NginxError("no color given and there are %d colors: name the color to switch to" % len(colors))
    if live is None:
        raise NginxError("no color given and the live color is unknown (the upstream file matches no color "
                         "and there is no marker): name the color to switch to")
    return [color for color in sorted(colors) if color != live][0]


def first_error_line(text):
    """nginx's own reason from `nginx -t` output: the [emerg]/[error] line, else the last line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        line = _LOG_PREFIX.sub(r"nginx: \1 ", line)
        if "[emerg]" in line or "[error]" in line or "[crit]" in line or "[alert]" in line:
            return line
    return lines[-1] if lines else "no output"


def project_path(project_dir, relative, option):
    """`relative` resolved inside the project directory; refuses absolute paths and escapes."""
    if not relative or os.path.isabs(relative):
        raise NginxError("%s must be a path relative to the project directory, got %r" % (option, relative))
    base = os.path.realpath(project_dir)
    path = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, path]) != base or path == base:
        raise NginxError("%s %r leads outside the project directory %s" % (option, relative, base))
    return path


# -- files -------------------------------------------------------------------------------

def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def atomic_write(path, data, like=None):
    """Write `data` to a new file beside `path` and rename it over `path`.

    Mode and ownership are those of `like` (a stat result of the file replaced), else 0644.
    The temporary name never ends in .conf, so an `include *.conf` cannot pick it up.
    """
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % name, suffix=".lastgood-tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, (like.st_mode & 0o7777) if like else 0o644)
        if like is not None and (like.st_uid, like.st_gid) != (os.getuid(), os.getgid()):
            with contextlib.suppress(PermissionError):
                os.chown(tmp, like.st_uid, like.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_marker(path):
    """(color or None, warning or None) from the marker file."""
    data = read_bytes(path)
    if data is None:
        return None, None
    try:
        color = json.loads(data.decode("utf-8")).get("color")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None, "marker %s is not valid JSON with a color; it will be rewritten" % path
    return (color if isinstance(color, str) else None), None


def marker_bytes(color, upstream_file, servers):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"color": color, "servers": servers, "upstream_file": upstream_file, "switched_at": stamp}
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")


@contextlib.contextmanager
def project_lock(project_dir):
    """One switch at a time per project: an exclusive flock on the project directory itself
    (no lock file to leave behind)."""
    fd = os.open(project_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- the nginx container -----------------------------------------------------------------

class NginxContainer:
    """The running nginx container of a compose service, driven through the Docker SDK."""

    def __init__(self, client, project_name, service):
        self.client = client
        self.service = service
        containers = [c for c in project_containers(client, project_name).get(service, []) if c["state"] == "running"]
        if len(containers) != 1:
            raise NginxError("service %s of project %s must have exactly one running container, found %d"
                             % (service, project_name, len(containers)))
        self.summary = containers[0]
        self.id = self.summary["id"]

    def exec(self, argv):
        """(exit code, stdout, stderr) of `argv` run inside the container (no shell)."""
        try:
            exec_id = self.client.api.exec_create(self.id, list(argv), stdout=True, stderr=True, tty=False)["Id"]
            out, err = self.client.api.exec_start(exec_id, demux=True)
            code = self.client.api.exec_inspect(exec_id)["ExitCode"]
        except (APIError, DockerException) as exc:
            raise NginxError("running %s in %s failed: %s" % (" ".join(argv), self.service, one_line(exc)))
        return code, (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace")

    def workers(self):
        """{pid: accepting?} of nginx's worker processes (docker top: no tool needed in the image)."""
        try:
            top = self.client.api.top(self.id)
        except (APIError, DockerException) as exc:
            raise NginxError("listing the processes of %s failed: %s" % (self.service, one_line(exc)))
        titles = top.get("Titles") or []
        pid_at, cmd_at = titles.index("PID"), titles.index("CMD")
        found = {}
        for row in top.get("Processes") or []:
            cmd = row[cmd_at]
            if cmd.startswith(WORKER_TITLE):
                found[row[pid_at]] = SHUTTING_DOWN not in cmd
        return found

    def state(self):
        """(container ID, start time) as the engine reports them now."""
        attrs = self.client.api.inspect_container(self.id)
        return attrs["Id"], attrs["State"]["StartedAt"]


# -- the switch ------------------------------------------------------------------------------

class Switch:
    """Plan and perform one switch. Construct, read `plan`, then call `run()` (not in check mode)."""

    def __init__(self, project_dir, project_name, upstream_file, marker_file, upstream_name, colors, color,
                 validate_command, reload_command, reload_timeout):
        self.project_dir = project_dir
        self.project_name = project_name
        self.upstream_rel = upstream_file
        self.upstream_path = project_path(project_dir, upstream_file, "upstream_file")
        self.marker_path = project_path(project_dir, marker_file, "marker_file")
        if not _NAME.match(upstream_name or ""):
            raise NginxError("upstream_name %r: use letters, digits, '-' and '_' only" % (upstream_name,))
        if not os.path.isdir(os.path.dirname(self.upstream_path)):
            raise NginxError("the directory of upstream_file %s does not exist" % self.upstream_path)
        self.colors = normalize_colors(colors)
        self.validate_command = list(validate_command)
        self.reload_command = list(reload_command)
        self.reload_timeout = reload_timeout
        self.warnings = []

        self.before = read_bytes(self.upstream_path)
        self.before_text = self.before.decode("utf-8", "replace") if self.before is not None else ""
        marker_color, warning = read_marker(self.marker_path)
        if warning:
            self.warnings.append(warning)
        self.marker_color = marker_color
        if self.before is not None:
            # The file is what nginx serves; the marker only speaks when there is no file yet.
            live = color_of_servers(self.colors, servers_in(self.before_text))
            if live is None:
                self.warnings.append("the upstream file %s matches no color; the live color is unknown" % upstream_file)
        else:
            live = marker_color if marker_color in self.colors else None
        self.from_color = live
        self.to_color = choose_target(self.colors, color, live)
        self.after_text = render_upstream(upstream_name, self.to_color, self.colors[self.to_color])
        self.after = self.after_text.encode("utf-8")
        self.file_changes = self.before != self.after
        self.marker_changes = marker_color != self.to_color

    @property
    def changed(self):
        return self.file_changes or self.marker_changes

    def planned_actions(self, service):
        actions = []
        if self.file_changes:
            actions += ["switch upstream from %s to %s in %s" % (self.from_color or "unknown", self.to_color, self.upstream_rel),
                        "validate with %s in service %s" % (" ".join(self.validate_command), service),
                        "reload nginx in service %s (no restart)" % service]
        if self.changed:
            actions.append("record live color %s in %s" % (self.to_color, os.path.relpath(self.marker_path, self.project_dir)))
        return actions

    def diff(self):
        return dict(before=self.before_text, after=self.after_text,
                    before_header=self.upstream_rel, after_header=self.upstream_rel)

    def run(self, nginx, result):
        """Perform the switch; fills `result` (actions, reloaded, validate, timings). Raises NginxError."""
        started = time.monotonic()
        result.update(reloaded=False, actions=[])
        if self.file_changes:
            like = os.stat(self.upstream_path) if self.before is not None else None
            old_workers = nginx.workers()
            atomic_write(self.upstream_path, self.after, like)
            result["actions"].append("switch upstream from %s to %s in %s"
                                     % (self.from_color or "unknown", self.to_color, self.upstream_rel))
            code, out, err = nginx.exec(self.validate_command)
            result["validate"] = dict(cmd=self.validate_command, rc=code, stdout=out, stderr=err)
            if code != 0:
                self._put_back(like)
                raise NginxError("%s refused the new upstream for %s (file put back, nothing reloaded, traffic stays on %s): %s"
                                 % (" ".join(self.validate_command), self.to_color, self.from_color or "the live color",
                                    first_error_line(err + "\n" + out)),
                                 actions=result["actions"] + ["put the previous upstream file back"],
                                 validate=result["validate"])
            result["actions"].append("validated with %s" % " ".join(self.validate_command))
            code, out, err = nginx.exec(self.reload_command)
            result["reload"] = dict(cmd=self.reload_command, rc=code, stdout=out, stderr=err)
            if code != 0:
                self._put_back(like)
                raise NginxError("%s failed (file put back; nginx serves %s as before): %s"
                                 % (" ".join(self.reload_command), self.from_color or "the live color",
                                    first_error_line(err + "\n" + out)),
                                 actions=result["actions"] + ["put the previous upstream file back"], reload=result["reload"])
            waited = self._wait_for_new_workers(nginx, old_workers, like, result)
            result["reloaded"] = True
            result["reload_wait_s"] = round(waited, 3)
            result["actions"].append("reloaded nginx (no restart); new workers serve %s" % self.to_color)
        if self.changed:
            atomic_write(self.marker_path, marker_bytes(self.to_color, self.upstream_rel, self.colors[self.to_color]),
                         os.stat(self.marker_path) if os.path.exists(self.marker_path) else None)
            result["actions"].append("recorded live color %s in %s"
                                     % (self.to_color, os.path.relpath(self.marker_path, self.project_dir)))
        result["switch_s"] = round(time.monotonic() - started, 3)

    def _put_back(self, like):
        """Restore the previous file byte for byte (or remove the new one if there was none)."""
        if self.before is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.upstream_path)
            return
        atomic_write(self.upstream_path, self.before, like)
        if read_bytes(self.upstream_path) != self.before:
            raise NginxError("could not put the previous upstream file %s back" % self.upstream_path)

    def _wait_for_new_workers(self, nginx, old_workers, like, result):
        """Poll until a worker started by the reload accepts and no old worker still does.

        nginx reloads asynchronously (`-s reload` only signals the master). Old workers that
        received the shutdown keep finishing their requests under the title "... is shutting
        down" but accept nothing new, so from then on every new request sees the new upstream.
        """
        started = time.monotonic()
        deadline = started + self.reload_timeout
        while True:
            workers = nginx.workers()
            new = [pid for pid, accepting in workers.items() if accepting and pid not in old_workers]
            old_accepting = [pid for pid, accepting in workers.items() if accepting and pid in old_workers]
            if new and not old_accepting:
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                if not new:
                    # The master kept its old configuration (a reload that fails keeps it): the
                    # file goes back so that it says what nginx serves.
                    self._put_back(like)
                    raise NginxError("nginx started no new worker within %.1f s of the reload (file put back; it still "
                                     "serves %s, see its log)" % (self.reload_timeout, self.from_color or "the live color"),
                                     actions=result["actions"] + ["put the previous upstream file back"])
                raise NginxError("old nginx workers %s still accept connections %.1f s after the reload"
                                 % (", ".join(old_accepting), self.reload_timeout), actions=result["actions"], changed=True)
            time.sleep(POLL_INTERVAL_S)
