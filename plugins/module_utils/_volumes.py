# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named Docker volumes: archive with sha256, verify, extract safely into staging, swap by rename.

Backup walks the volume's data directory (its ``Mountpoint``, read as root on the host) in a
fixed order - depth first, the entries of each directory sorted bytewise - and streams a tar
archive (PAX, optionally gzip) to ``<dest>.part-<pid>`` while hashing the bytes written, then
renames it to ``dest``. Ownership is stored as numbers only (uname/gname empty): the names of
the host mean nothing inside a container. Regular files, directories, symlinks and hard links
are archived; sockets, FIFOs and device nodes are skipped and reported, because restore
refuses them. Modification times are stored in whole seconds.

What a backup records to verify a restore later:

* ``sha256`` and ``size`` of the archive file;
* counts (``entries``, ``files``, ``dirs``, ``symlinks``, ``hardlinks``, ``bytes``);
* ``tree_digest``: an order-independent digest of every entry's type, path, mode, uid, gid,
  size, mtime and link target (the sum modulo 2**256 of one sha256 per entry). The staging
  tree must reproduce it exactly before it may replace the live data, and a live volume
  whose digest equals it already holds the archive's content (restore changes nothing);
* ``paths``: up to PATH_SAMPLE relative paths, all of them for small volumes, else a
  deterministic uniform sample (``paths_complete`` says which): the files that must be
  present once the services run again.

Restore, in order, changing nothing until the archive is known to be good:

1. the volume name is checked (Docker's own rule, and no ``..``) before any engine call;
2. the archive's size and sha256 are checked, then the whole archive is read (gzip CRC,
   truncated members) and every member passes ``check_member`` (the safe-extraction filter
   below); the symlink graph is resolved inside the archive's own namespace;
3. the archive is extracted into ``<volume dir>/_data.lgstage-<id>``, a directory beside the
   live ``_data`` in the volume's own directory: same filesystem, so the swap is a rename and
   never a copy; Docker's local driver ignores extra entries there and removes them with the
   volume. (A directory directly under ``/var/lib/docker/volumes`` would be taken for a
   volume by the daemon at its next start; a helper volume would leave its metadata behind.)
   The archive is hashed again while extracting and the staging tree must match
   ``tree_digest``; otherwise the staging directory is removed and the restore refused;
4. only the containers that mount the volume and are running are stopped; ``_data`` is
   renamed to ``_data.before-<id>`` (the safety copy) and the staging directory to ``_data``
   (a failed second rename puts the first back); the containers are started again; the
   downtime is the time from the first stop to the last start;
5. the recorded paths are checked in the live volume; the safety copy is removed only when
   asked (``keep_previous=False``) and everything went well.

The safe-extraction filter has 'tar' semantics (numeric ownership and the full mode,
including setuid/setgid/sticky bits, are restored; the archive is trusted as far as the
sha256 recorded at backup time ties it to that backup) and refuses: absolute names, ``..``
components, empty components, duplicate names, members whose parent is not a directory
extracted before them (so nothing is ever written through a symlink), symlinks whose target
is absolute or resolves outside the archive root (following the archive's own symlinks),
hard links to anything but a regular file extracted before, device nodes, FIFOs and every
other special type. Files are created with O_EXCL|O_NOFOLLOW and their attributes set on the
open descriptor; no path is followed.

Only volumes of the ``local`` driver without driver options are supported: with options
(``type=nfs``, ``o=bind``...) ``_data`` is a mount point while in use, and renaming it would
not restore the data that lives elsewhere.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import os
import random
import re
import shutil
import stat
import tarfile
import time
import zlib

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import ComposeError
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    APIError,
    NotFound,
    container_summary,
    one_line,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    ManifestError,
    check_safe_name,
    create_private,
    isoformat,
    utc_now,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError

FORMAT = "lastgood-volume-tar/1"
PATH_SAMPLE = 500
CHUNK = 1024 * 1024
STAGING_INFIX = ".lgstage-"
PREVIOUS_INFIX = ".before-"
# Docker's rule for volume names ([a-zA-Z0-9][a-zA-Z0-9_.-]+), length capped.
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,254}$")
_MAX_LINK_HOPS = 40
_MODULUS = 1 << 256
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class VolumeError(StepError):
    """A refused or failed volume operation; `msg` is one line, `result` what was done so far."""


class UnsafeMember(VolumeError):
    """An archive member the safe-extraction filter refuses."""


# -- names --------------------------------------------------------------------------------------

def check_volume_name(name):
    """The name when Docker would accept it as a volume name and it has no '..'; else VolumeError."""
    if not isinstance(name, str) or not _VOLUME_NAME.fullmatch(name) or ".." in name:
        raise VolumeError(
            "volume name %r is refused: a volume name is [A-Za-z0-9][A-Za-z0-9_.-]+ without '..'" % (name,))
    return name


def check_snapshot_id(value):
    """A snapshot id that is safe in file names (check_safe_name, and nothing after the name)."""
    try:
        check_safe_name(value)
    except ManifestError as exc:
        raise VolumeError(str(exc))
    if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise VolumeError("snapshot id %r is not a safe name (letters, digits, '.', '_', '-')" % (value,))
    return value


def resolve_volume_name(project, volume):
    """The Docker name of `volume`: with a compose project, a key of its top-level `volumes:`
    resolves to the volume's real name (e.g. media -> shop_media); else the name as given."""
    if project is not None:
        try:
            spec = (project.config().get("volumes") or {}).get(volume)
        except ComposeError as exc:
            raise VolumeError(exc.msg, **exc.result)
        if isinstance(spec, dict) and spec.get("name"):
            return check_volume_name(spec["name"])
    return check_volume_name(volume)


def printable(path):
    """A path as text for results and messages, whatever bytes its name has."""
    return os.fsencode(path).decode("utf-8", "replace")


# -- the engine ---------------------------------------------------------------------------------

def inspect_volume(client, name):
    """{name, mountpoint, driver, labels} of a local volume that can be archived and swapped."""
    check_volume_name(name)
    try:
        attrs = client.api.inspect_volume(name)
    except NotFound:
        raise VolumeError("volume %s does not exist" % name)
    except APIError as exc:
        raise VolumeError("cannot inspect volume %s: %s" % (name, one_line(exc)))
    driver = attrs.get("Driver")
    if driver != "local" or attrs.get("Options"):
        raise VolumeError("volume %s uses driver %s with options %s: only local volumes without driver options are supported"
                          % (name, driver, attrs.get("Options") or {}))
    mountpoint = attrs.get("Mountpoint") or ""
    if not os.path.isabs(mountpoint) or not os.path.isdir(mountpoint) or os.path.islink(mountpoint):
        raise VolumeError("the data directory %s of volume %s is missing or not readable here (run as root on the Docker host)"
                          % (mountpoint, name))
    return {"name": name, "mountpoint": mountpoint, "driver": driver, "labels": attrs.get("Labels") or {}}


def volume_containers(client, name):
    """Every container (running or not) that mounts the volume, as container_summary dicts
    with their compose `project` added."""
    found = []
    for item in client.api.containers(all=True, filters={"volume": name}):
        try:
            attrs = client.api.inspect_container(item["Id"])
        except NotFound:
            continue
        mounts = attrs.get("Mounts") or []
        if not any(m.get("Type") == "volume" and m.get("Name") == name for m in mounts):
            continue
        summary = container_summary(attrs)
        summary["project"] = ((attrs.get("Config") or {}).get("Labels") or {}).get("com.docker.compose.project")
        # Its own grace period (compose's stop_grace_period), for ContainerPause.
        summary["stop_timeout"] = (attrs.get("Config") or {}).get("StopTimeout")
        found.append(summary)
    return sorted(found, key=lambda c: c["name"])


class ContainerPause:
    """Stop (or pause) containers and bring them back, timing the window they were down."""

    def __init__(self, client, containers, how="stop", stop_timeout=None):
        self.client = client
        self.containers = containers
        self.how = how
        self.stop_timeout = stop_timeout
        self.done = []
        self.problems = []
        self.down_at = None
        self.up_at = None

    def __enter__(self):
        self.down_at = time.time()
        try:
            for container in self.containers:
                if self.how == "pause":
                    self.client.api.pause(container["id"])
                else:
                    self.client.api.stop(container["id"], timeout=self._grace(container))
                self.done.append(container)
        # Not only the engine's refusals: a timeout or a lost connection must bring the others back too,
        # and the one that failed, which the engine may well have stopped anyway.
        except Exception as exc:  # pylint: disable=broad-except
            if self.how == "stop":
                self.done.append(container)
            problems = self.resume()
            raise VolumeError("cannot %s container %s: %s%s" % (
                self.how, container["name"], one_line(exc),
                "; bringing the others back also failed: %s" % "; ".join(problems) if problems else ""))
        return self

    def _grace(self, container):
        """Seconds the stop gives the container: the given one, else its own (compose's stop_grace_period,
        as volume_containers read it) or the engine's 10, so that the wait for the engine's answer covers
        the whole grace period."""
        if self.stop_timeout is not None:
            return self.stop_timeout
        configured = container.get("stop_timeout")
        return 10 if configured is None else configured

    def resume(self):
        """Start (unpause) every container this stopped; the problems, one line each."""
        problems = []
        for container in self.done:
            try:
                if self.how == "pause":
                    self.client.api.unpause(container["id"])
                else:
                    self.client.api.start(container["id"])
            except Exception as exc:  # pylint: disable=broad-except
                problems.append("%s: %s" % (container["name"], one_line(exc)))
        self.done = []
        self.up_at = time.time()
        self.problems.extend(problems)
        return problems

    def __exit__(self, exc_type, exc, tb):
        problems = self.resume()
        if problems and exc_type is None:
            verb = "unpause" if self.how == "pause" else "start"
            raise VolumeError("cannot %s container(s) again: %s" % (verb, "; ".join(problems)))
        return False

    def window(self):
        """{down_at, up_at, seconds} of the stop (pause) window, None when nothing was stopped."""
        if not self.containers or self.down_at is None or self.up_at is None:
            return None
        return {"down_at": isoformat_ts(self.down_at), "up_at": isoformat_ts(self.up_at),
                "seconds": round(self.up_at - self.down_at, 3)}


def isoformat_ts(timestamp):
    return isoformat(datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc))


# -- the tree digest ----------------------------------------------------------------------------

class TreeSummary:
    """Counts, a path sample and the order-independent digest of a tree or an archive."""

    def __init__(self):
        self.total = 0
        self.entries = 0
        self.files = 0
        self.dirs = 0
        self.symlinks = 0
        self.hardlinks = 0
        self.bytes = 0
        self.sample = []
        self._random = random.Random(0)

    def add(self, kind, name, mode=0, uid=0, gid=0, size=0, mtime=0, target=""):
        """One entry: kind d(irectory), f(ile), l (symlink) or h (hard link to `target`)."""
        if kind == "h":
            fields = [b"h", os.fsencode(name), os.fsencode(target)]
        else:
            fields = [kind.encode(), os.fsencode(name), b"%o" % stat.S_IMODE(mode), b"%d" % uid, b"%d" % gid,
                      b"%d" % (size if kind == "f" else 0), b"%d" % int(mtime), os.fsencode(target)]
        line = b"\0".join(fields) + b"\n"
        self.total = (self.total + int.from_bytes(hashlib.sha256(line).digest(), "big")) % _MODULUS
        if name == ".":
            return
        self.entries += 1
        if kind == "f":
            self.files += 1
            self.bytes += size
        elif kind == "d":
            self.dirs += 1
        elif kind == "l":
            self.symlinks += 1
        else:
            self.hardlinks += 1
        # Reservoir sampling: a uniform, reproducible sample of the paths.
        if len(self.sample) < PATH_SAMPLE:
            self.sample.append(name)
        else:
            slot = self._random.randrange(self.entries)
            if slot < PATH_SAMPLE:
                self.sample[slot] = name

    @property
    def digest(self):
        return "%064x" % self.total

    def as_dict(self):
        return {"entries": self.entries, "files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "hardlinks": self.hardlinks, "bytes": self.bytes, "tree_digest": self.digest,
                "paths": sorted(printable(p) for p in self.sample),
                "paths_complete": self.entries <= PATH_SAMPLE}


def _sorted_children(root, rel):
    directory = os.path.join(root, rel) if rel else root
    children = []
    for name in sorted(os.listdir(directory), key=os.fsencode):
        child = os.path.join(rel, name) if rel else name
        try:
            children.append((child, os.lstat(os.path.join(root, child))))
        except FileNotFoundError:  # removed since the listing: not part of the tree any more
            continue
    return children


def walk_tree(root):
    """(relative path, lstat) of `root` ('.') and everything below it, depth first, the entries
    of each directory sorted bytewise; symlinks are never followed."""
    yield ".", os.lstat(root)
    stack = [iter(_sorted_children(root, ""))]
    while stack:
        try:
            rel, info = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        yield rel, info
        if stat.S_ISDIR(info.st_mode):
            try:
                stack.append(iter(_sorted_children(root, rel)))
            except FileNotFoundError:
                continue


def summarize_tree(root, include_root=True):
    """TreeSummary of a directory tree (special files are left out, as backup leaves them out).

    `include_root=False` leaves the root directory's own attributes out of the digest, for
    archives that have no entry for their root.
    """
    summary = TreeSummary()
    first_link = {}
    for rel, info in walk_tree(root):
        mode = info.st_mode
        if rel == "." and not include_root:
            continue
        if stat.S_ISDIR(mode):
            summary.add("d", rel, mode, info.st_uid, info.st_gid, 0, info.st_mtime)
        elif stat.S_ISLNK(mode):
            summary.add("l", rel, mode, info.st_uid, info.st_gid, 0, info.st_mtime,
                        os.readlink(os.path.join(root, rel)))
        elif stat.S_ISREG(mode):
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1 and key in first_link:
                summary.add("h", rel, target=first_link[key])
                continue
            if info.st_nlink > 1:
                first_link[key] = rel
            summary.add("f", rel, mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime)
    return summary


# -- backup -------------------------------------------------------------------------------------

class _HashingWriter:
    def __init__(self, raw):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self):
        self.raw.flush()


class _HashingReader:
    def __init__(self, raw):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size=-1):
        data = self.raw.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def drain(self):
        """Read (and hash) whatever tarfile left unread, e.g. the zero blocks at the end."""
        while self.read(CHUNK):
            pass


def _base_info(rel, info, kind=tarfile.REGTYPE):
    member = tarfile.TarInfo(rel)
    member.type = kind
    member.mode = stat.S_IMODE(info.st_mode)
    member.uid = info.st_uid
    member.gid = info.st_gid
    member.uname = ""
    member.gname = ""
    member.mtime = int(info.st_mtime)
    return member


def write_archive(root, handle, compress=False):
    """Stream `root` as a tar archive into `handle`; (TreeSummary, skipped paths, sha256, size)."""
    writer = _HashingWriter(handle)
    summary = TreeSummary()
    skipped = []
    first_link = {}
    with tarfile.open(fileobj=writer, mode="w|gz" if compress else "w|", format=tarfile.PAX_FORMAT) as tar:
        for rel, info in walk_tree(root):
            path = os.path.join(root, rel) if rel != "." else root
            mode = info.st_mode
            if stat.S_ISDIR(mode):
                tar.addfile(_base_info(rel, info, tarfile.DIRTYPE))
                summary.add("d", rel, mode, info.st_uid, info.st_gid, 0, info.st_mtime)
            elif stat.S_ISLNK(mode):
                member = _base_info(rel, info, tarfile.SYMTYPE)
                try:
                    member.linkname = os.readlink(path)
                except FileNotFoundError:
                    skipped.append(printable(rel) + " (vanished)")
                    continue
                tar.addfile(member)
                summary.add("l", rel, mode, info.st_uid, info.st_gid, 0, info.st_mtime, member.linkname)
            elif stat.S_ISREG(mode):
                _add_regular(tar, path, rel, summary, first_link, skipped)
            else:
                skipped.append("%s (%s)" % (printable(rel), _special_kind(mode)))
    return summary, skipped, writer.sha256.hexdigest(), writer.size


def _add_regular(tar, path, rel, summary, first_link, skipped):
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):  # removed or replaced by a link since the listing
            skipped.append(printable(rel) + " (vanished)")
            return
        raise
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            skipped.append("%s (%s)" % (printable(rel), _special_kind(info.st_mode)))
            return
        member = _base_info(rel, info)
        key = (info.st_dev, info.st_ino)
        if info.st_nlink > 1 and key in first_link:
            member.type = tarfile.LNKTYPE
            member.linkname = first_link[key]
            tar.addfile(member)
            summary.add("h", rel, target=first_link[key])
            return
        if info.st_nlink > 1:
            first_link[key] = rel
        member.size = info.st_size
        try:
            tar.addfile(member, source)
        except OSError as exc:
            raise VolumeError("file %s changed while it was archived (%s): the archive is unusable; stop or pause the "
                              "services using the volume during the backup (quiesce)" % (printable(rel), exc))
        summary.add("f", rel, info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime)


def _special_kind(mode):
    for test, kind in ((stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def backup_volume(module, client, volume, dest_path, compress=False, quiesce="none", stop_timeout=None):
    """Archive a named volume to `dest_path` (written beside it as .part, then renamed).

    `quiesce`: "none" (default; a running container may change files meanwhile: a warning is
    returned), "pause" or "stop" the running containers that mount the volume while the
    archive is written. Returns dict(volume, file, sha256, size, compression, entries, files,
    dirs, symlinks, hardlinks, bytes, tree_digest, paths, paths_complete, skipped, created_at,
    duration_s, quiesce, containers, downtime, warnings, format). Raises VolumeError.
    `module` is not used; it is taken for symmetry with the other entry points.
    """
    del module
    if quiesce not in ("none", "pause", "stop"):
        raise VolumeError("quiesce must be none, pause or stop, not %r" % (quiesce,))
    vol = inspect_volume(client, volume)
    owners = volume_containers(client, volume)
    running = [c for c in owners if c["state"] == "running"]
    warnings = []
    if quiesce == "none" and running:
        warnings.append("volume %s is in use by running container(s) %s: a live volume may be archived in an inconsistent "
                        "state (quiesce: pause or stop avoids that)" % (volume, ", ".join(c["name"] for c in running)))
    dest_path = os.path.abspath(dest_path)
    directory = os.path.dirname(dest_path)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    partial = "%s.part-%d" % (dest_path, os.getpid())
    started = time.monotonic()
    moment = utc_now()
    pause = ContainerPause(client, running if quiesce != "none" else [], how=quiesce, stop_timeout=stop_timeout)
    published = False
    try:
        with pause:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
            with os.fdopen(fd, "wb") as handle:
                summary, skipped, digest, size = write_archive(vol["mountpoint"], handle, compress)
                handle.flush()
                os.fsync(handle.fileno())
            # Published before the containers start again: one that fails to start does not
            # cost the complete archive (and another stop to take it again).
            os.replace(partial, dest_path)
            published = True
        _fsync_dir(directory)
    except (OSError, tarfile.TarError) as exc:
        _remove_quietly(partial)
        raise VolumeError("backup of volume %s failed: %s" % (volume, one_line(exc)))
    except VolumeError as exc:
        _remove_quietly(partial)
        if published:
            raise VolumeError("%s (the archive %s of volume %s is complete)" % (exc.msg, dest_path, volume))
        raise
    except BaseException:
        _remove_quietly(partial)
        raise
    if skipped:
        warnings.append("volume %s: %d special or vanished file(s) not archived: %s" % (
            volume, len(skipped), ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else "")))
    result = {
        "format": FORMAT,
        "volume": volume,
        "mountpoint": vol["mountpoint"],
        "file": dest_path,
        "sha256": digest,
        "size": size,
        "compression": "gzip" if compress else "none",
        "created_at": isoformat(moment),
        "duration_s": round(time.monotonic() - started, 3),
        "quiesce": quiesce,
        "containers": [{"name": c["name"], "service": c["service"], "project": c["project"], "state": c["state"]}
                       for c in owners],
        "downtime": pause.window() if quiesce != "none" and running else None,
        "skipped": skipped[:100],
        "warnings": warnings,
    }
    result.update(summary.as_dict())
    return result


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# -- the safe-extraction filter -----------------------------------------------------------------

def normalize_member_name(raw):
    """The member's path relative to the archive root ('.' for the root itself); UnsafeMember
    for absolute names, '..', empty or '.' components inside the path."""
    if not isinstance(raw, str) or raw == "":
        raise UnsafeMember("member with an empty name")
    if raw.startswith("/"):
        raise UnsafeMember("member %s has an absolute path" % printable(raw))
    parts = raw.rstrip("/").split("/")
    while len(parts) > 1 and parts[0] == ".":
        parts.pop(0)
    if parts == ["."]:
        return "."
    for part in parts:
        if part == "..":
            raise UnsafeMember("member %s leaves the target directory ('..')" % printable(raw))
        if part in ("", "."):
            raise UnsafeMember("member %s has an empty or '.' path component" % printable(raw))
    return "/".join(parts)


class MemberCheck:
    """The safe-extraction filter: what an archive may contain, member by member.

    `check(member)` returns the normalized name or raises UnsafeMember; `finish()` checks what
    can only be judged with every member known (where each symlink finally points).
    """

    def __init__(self):
        self.seen = set()
        self.dirs = {"."}
        self.files = set()
        self.symlinks = {}
        self.summary = TreeSummary()
        self.root_seen = False

    def check(self, member):
        name = normalize_member_name(member.name)
        if name in self.seen or (name == "." and self.root_seen):
            raise UnsafeMember("member %s appears twice" % printable(name))
        if name == ".":
            if not member.isdir():
                raise UnsafeMember("the archive root is not a directory")
            if self.seen:
                raise UnsafeMember("the archive root comes after other members")
            self.root_seen = True
            self.summary.add("d", ".", member.mode, member.uid, member.gid, 0, member.mtime)
            return name
        parent = name.rpartition("/")[0] or "."
        if parent not in self.dirs:
            if parent in self.symlinks:
                raise UnsafeMember("member %s would be written through the symlink %s" % (printable(name), printable(parent)))
            raise UnsafeMember("member %s comes before its directory %s (or that is not a directory)"
                               % (printable(name), printable(parent)))
        if member.isdir():
            self.dirs.add(name)
            self.summary.add("d", name, member.mode, member.uid, member.gid, 0, member.mtime)
        elif member.issym():
            target = member.linkname
            if not target:
                raise UnsafeMember("symlink %s has an empty target" % printable(name))
            if target.startswith("/"):
                raise UnsafeMember("symlink %s points to the absolute path %s" % (printable(name), printable(target)))
            if _lexically_outside(parent, target):
                raise UnsafeMember("symlink %s points outside the target directory (%s)" % (printable(name), printable(target)))
            self.symlinks[name] = target
            self.summary.add("l", name, member.mode, member.uid, member.gid, 0, member.mtime, target)
        elif member.islnk():
            try:
                target = normalize_member_name(member.linkname)
            except UnsafeMember:
                raise UnsafeMember("hard link %s points outside the target directory (%s)"
                                   % (printable(name), printable(member.linkname)))
            if target not in self.files:
                raise UnsafeMember("hard link %s points to %s, which is not a regular file extracted before it"
                                   % (printable(name), printable(target)))
            self.files.add(name)
            self.summary.add("h", name, target=target)
        elif member.isreg():
            self.files.add(name)
            self.summary.add("f", name, member.mode, member.uid, member.gid, member.size, member.mtime)
        elif member.ischr() or member.isblk():
            raise UnsafeMember("member %s is a device node" % printable(name))
        elif member.isfifo():
            raise UnsafeMember("member %s is a FIFO" % printable(name))
        else:
            raise UnsafeMember("member %s has the unsupported type %r" % (printable(name), member.type))
        self.seen.add(name)
        return name

    def finish(self):
        """Every symlink, followed through the archive's own symlinks, must stay inside."""
        for name, target in self.symlinks.items():
            parent = name.rpartition("/")[0]
            try:
                _resolve_inside(parent.split("/") if parent else [], target, self.symlinks)
            except UnsafeMember as exc:
                raise UnsafeMember("symlink %s points outside the target directory: %s" % (printable(name), exc.msg))


def _lexically_outside(parent, target):
    depth = 0 if parent == "." else len(parent.split("/"))
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


def _resolve_inside(start, target, symlinks):
    """Follow `target` from directory `start` (a list of components) as the kernel would, with
    the archive's symlinks; UnsafeMember when it goes above the root or loops."""
    parts = list(start)
    pending = [p for p in target.split("/") if p not in ("", ".")]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not parts:
                raise UnsafeMember("%s goes above the root" % printable(target))
            parts.pop()
            continue
        parts.append(part)
        key = "/".join(parts)
        if key in symlinks:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise UnsafeMember("too many levels of symlinks from %s" % printable(target))
            parts.pop()
            link = symlinks[key]
            if link.startswith("/"):
                raise UnsafeMember("%s reaches the absolute symlink %s" % (printable(target), printable(key)))
            pending = [p for p in link.split("/") if p not in ("", ".")] + pending
    return parts


# -- verification and extraction ----------------------------------------------------------------

_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError)


def _read_member_data(tar, member):
    source = tar.extractfile(member)
    if source is None:
        return
    remaining = member.size
    while remaining > 0:
        block = source.read(min(CHUNK, remaining))
        if not block:
            raise tarfile.ReadError("unexpected end of data in %s" % printable(member.name))
        remaining -= len(block)


def verify_archive(path, expected_sha256, expected_size=None):
    """Read the whole archive once without writing anything: size, sha256, structure, every
    member through MemberCheck. Returns (TreeSummary, whether the archive has a root entry);
    raises VolumeError."""
    if not isinstance(expected_sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", expected_sha256):
        raise VolumeError("no valid sha256 recorded for archive %s: refusing to restore an unverifiable archive" % path)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise VolumeError("archive %s cannot be read: %s" % (path, exc.strerror))
    if not os.path.isfile(path):
        raise VolumeError("archive %s is not a regular file" % path)
    if expected_size is not None and size != int(expected_size):
        raise VolumeError("archive %s is %d bytes, the backup recorded %d: it is truncated or not the recorded archive"
                          % (path, size, int(expected_size)))
    checker = MemberCheck()
    problem = None
    with open(path, "rb") as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tar:
                for member in tar:
                    checker.check(member)
                    if member.isreg():
                        _read_member_data(tar, member)
                checker.finish()
        except UnsafeMember as exc:
            problem = "archive %s is refused: %s" % (path, exc.msg)
        except _READ_ERRORS as exc:
            problem = "archive %s is damaged or truncated: %s" % (path, one_line(exc) or type(exc).__name__)
        reader.drain()
    actual = reader.sha256.hexdigest()
    if actual != expected_sha256:
        raise VolumeError("archive %s does not match its recorded sha256 (expected %s..., got %s...)"
                          % (path, expected_sha256[:12], actual[:12]))
    if problem:
        raise VolumeError(problem)
    return checker.summary, checker.root_seen


class SafeExtractor:
    """Extract members (already accepted by MemberCheck) into `target` without following any path."""

    def __init__(self, target):
        self.target = target
        self.checker = MemberCheck()
        self.dir_attrs = []

    def extract(self, tar, member):
        name = self.checker.check(member)
        path = os.path.join(self.target, name) if name != "." else self.target
        if member.isdir():
            if name != ".":
                os.mkdir(path, 0o700)
            self.dir_attrs.append((path, member))
        elif member.issym():
            os.symlink(member.linkname, path)
            os.lchown(path, member.uid, member.gid)
            if os.utime in os.supports_follow_symlinks:
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        elif member.islnk():
            source = os.path.join(self.target, normalize_member_name(member.linkname))
            os.link(source, path, follow_symlinks=False)
        else:
            self._write_file(tar, member, path)

    @staticmethod
    def _write_file(tar, member, path):
        with create_private(path) as handle:
            source = tar.extractfile(member)
            remaining = member.size
            while remaining > 0:
                block = source.read(min(CHUNK, remaining))
                if not block:
                    raise tarfile.ReadError("unexpected end of data in %s" % printable(member.name))
                handle.write(block)
                remaining -= len(block)
            handle.flush()
            fd = handle.fileno()
            os.fchown(fd, member.uid, member.gid)
            # After chown, which clears setuid/setgid bits.
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, (member.mtime, member.mtime))

    def finish(self):
        self.checker.finish()
        # Deepest first, so that setting a parent's mtime comes after its children changed it.
        for path, member in sorted(self.dir_attrs, key=lambda item: item[0].count("/"), reverse=True):
            os.lchown(path, member.uid, member.gid)
            os.chmod(path, member.mode & 0o7777)
            os.utime(path, (member.mtime, member.mtime))


def extract_archive(path, target, expected_sha256):
    """Extract into the new directory `target` (created here); the archive is hashed again while
    extracting (it must not have changed since it was verified). Raises VolumeError."""
    os.mkdir(target, 0o700)
    extractor = SafeExtractor(target)
    problem = None
    with open(path, "rb") as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tar:
                for member in tar:
                    extractor.extract(tar, member)
                extractor.finish()
        except UnsafeMember as exc:
            problem = "archive %s is refused: %s" % (path, exc.msg)
        except _READ_ERRORS as exc:
            problem = "extracting %s failed: %s" % (path, one_line(exc) or type(exc).__name__)
        reader.drain()
    if reader.sha256.hexdigest() != expected_sha256:
        problem = "archive %s changed while it was being restored (sha256 differs from the verified one)" % path
    if problem:
        raise VolumeError(problem)
    return extractor.checker.summary


# -- restore ------------------------------------------------------------------------------------

def _unused_path(base):
    candidate, counter = base, 1
    while os.path.lexists(candidate):
        counter += 1
        candidate = "%s-%d" % (base, counter)
    return candidate


def previous_copies(mountpoint):
    """Safety copies (`_data.before-<id>`) kept beside a volume's data directory."""
    parent, base = os.path.split(mountpoint)
    prefix = base + PREVIOUS_INFIX
    try:
        return sorted(os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix))
    except OSError:
        return []


def restore_volume(module, client, project, volume, archive_path, recorded, snapshot_id,
                   keep_previous=True, check_mode=False, stop_timeout=None, force=False):
    """Put the content of `archive_path` into a named volume, stopping only its users for the swap.

    `project` (a ComposeProject or None) lets `volume` be a key of the project's volumes.
    `recorded` is the dict backup_volume returned (at least `sha256`; `size`, `tree_digest` and
    `paths` are checked when present). `snapshot_id` names the staging and safety directories.
    Returns dict(changed, actions, volume, mountpoint, containers_stopped, downtime,
    previous_path, ...). Raises VolumeError (its `result` tells what was done) when refused or
    failed; before the swap a failure leaves the live volume untouched. `module` is not used.
    """
    del module
    recorded = recorded or {}
    result = {"changed": False, "actions": [], "volume": volume, "archive": archive_path,
              "containers_stopped": [], "downtime": None, "previous_path": None}
    name = resolve_volume_name(project, volume)
    result["volume"] = name
    try:
        check_snapshot_id(snapshot_id)
    except VolumeError as exc:
        raise VolumeError(exc.msg, **result)
    vol = inspect_volume(client, name)
    mountpoint = vol["mountpoint"]
    result["mountpoint"] = mountpoint
    archive, archive_has_root = verify_archive(archive_path, recorded.get("sha256"), recorded.get("size"))
    result["archive_entries"] = archive.entries
    recorded_digest = recorded.get("tree_digest")
    if recorded_digest and recorded_digest != archive.digest:
        raise VolumeError("archive %s does not hold the recorded file list (tree digest %s..., recorded %s...)"
                          % (archive_path, archive.digest[:12], recorded_digest[:12]), **result)
    # Archives written by other tools may lack an entry for their root: compare members only.
    live = summarize_tree(mountpoint, include_root=archive_has_root)
    result["before"] = {"entries": live.entries, "bytes": live.bytes, "tree_digest": live.digest}
    result["after"] = {"entries": archive.entries, "bytes": archive.bytes, "tree_digest": archive.digest}
    result["previous_copies"] = previous_copies(mountpoint)
    if live.digest == archive.digest and not force:
        result["msg"] = "volume %s already holds the archive's content" % name
        return result

    owners = volume_containers(client, name)
    paused = [c["name"] for c in owners if c["state"] == "paused"]
    if paused:
        raise VolumeError("container(s) %s using volume %s are paused: unpause them first" % (", ".join(paused), name),
                          **result)
    running = [c for c in owners if c["state"] in ("running", "restarting")]
    parent, base = os.path.split(mountpoint)
    staging = os.path.join(parent, base + STAGING_INFIX + snapshot_id)
    previous = _unused_path(os.path.join(parent, base + PREVIOUS_INFIX + snapshot_id))
    needed = archive.bytes + 4096 * (archive.entries + 1)
    fs = os.statvfs(parent)
    if fs.f_bavail * fs.f_frsize < needed:
        raise VolumeError("not enough space beside volume %s for the staging copy: %d bytes needed, %d free"
                          % (name, needed, fs.f_bavail * fs.f_frsize), **result)

    actions = result["actions"]
    if os.path.lexists(staging):
        actions.append("remove the staging directory %s left by an interrupted restore" % staging)
    actions.append("extract %s (%d entries, %d bytes) into %s" % (archive_path, archive.entries, archive.bytes, staging))
    if running:
        actions.append("stop container(s) %s" % ", ".join(c["name"] for c in running))
    actions.append("rename %s to %s and the staging directory to %s" % (mountpoint, previous, mountpoint))
    if running:
        actions.append("start container(s) %s" % ", ".join(c["name"] for c in running))
    actions.append("keep the previous content at %s" % previous if keep_previous
                   else "remove the previous content after the restore succeeded")
    result["changed"] = True
    result["containers"] = [{"name": c["name"], "service": c["service"], "project": c["project"], "state": c["state"]}
                            for c in owners]
    if check_mode:
        return result

    if os.path.lexists(staging):
        shutil.rmtree(staging)
    try:
        extracted = extract_archive(archive_path, staging, recorded["sha256"])
        if not archive_has_root:
            # Without a root entry the new data directory gets the owner and mode of the old one.
            info = os.stat(mountpoint)
            os.chown(staging, info.st_uid, info.st_gid)
            os.chmod(staging, stat.S_IMODE(info.st_mode))
        staged = summarize_tree(staging, include_root=archive_has_root)
        if staged.digest != extracted.digest or staged.digest != archive.digest:
            raise VolumeError("the extracted tree does not match the archive (%d entries, expected %d)"
                              % (staged.entries, archive.entries))
        if os.stat(staging).st_dev != os.stat(mountpoint).st_dev:
            raise VolumeError("staging directory %s is not on the filesystem of %s" % (staging, mountpoint))
    except (VolumeError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        msg = exc.msg if isinstance(exc, VolumeError) else "extracting into %s failed: %s" % (staging, one_line(exc))
        raise VolumeError("%s; volume %s is unchanged" % (msg, name), **result)

    pause = ContainerPause(client, running, how="stop", stop_timeout=stop_timeout)
    try:
        with pause:
            result["containers_stopped"] = [c["name"] for c in running]
            os.rename(mountpoint, previous)
            try:
                os.rename(staging, mountpoint)
            except OSError:
                os.rename(previous, mountpoint)
                raise
            result["previous_path"] = previous
            # Before the containers start again: an application that removes files as it starts
            # (a lock, a cache) must not make a complete restore look incomplete. Paths whose names
            # are not UTF-8 were recorded with replacement characters: not checkable.
            missing = [p for p in (recorded.get("paths") or archive.as_dict()["paths"])
                       if "\ufffd" not in p and not os.path.lexists(os.path.join(mountpoint, p))]
    except (VolumeError, OSError) as exc:
        result["downtime"] = pause.window()
        msg = exc.msg if isinstance(exc, VolumeError) else one_line(exc)
        if pause.problems and not isinstance(exc, VolumeError):
            msg += "; starting the containers again failed too: %s" % "; ".join(pause.problems)
        if result["previous_path"] is None:
            shutil.rmtree(staging, ignore_errors=True)
            raise VolumeError("restore of volume %s failed before the swap, the volume is unchanged: %s" % (name, msg),
                              **result)
        raise VolumeError("volume %s was restored but its containers did not all start again: %s (previous content at %s)"
                          % (name, msg, previous), **result)
    result["downtime"] = pause.window()
    result["missing_paths"] = missing[:50]
    if missing:
        raise VolumeError("volume %s was restored but %d expected path(s) are missing, e.g. %s (previous content at %s)"
                          % (name, len(missing), missing[0], previous), **result)
    if not keep_previous:
        shutil.rmtree(previous)
        result["previous_path"] = None
        actions[-1] = "removed the previous content"
    result["previous_copies"] = previous_copies(mountpoint)
    result["msg"] = "volume %s restored from %s (%d entries)" % (name, archive_path, archive.entries)
    return result
