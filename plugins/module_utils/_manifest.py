# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot storage: ids, manifest with checksum, last-known-good pointer, retention.

Layout under the backup root::

    <backup_root>/<project>/<snapshot_id>/manifest.json
    <backup_root>/<project>/<snapshot_id>/manifest.json.sha256   (sha256sum format)
    <backup_root>/<project>/<snapshot_id>/files/<relative path>  (copies of config files)
    <backup_root>/<project>/<snapshot_id>/BAD                     (present: never roll back onto it)
    <backup_root>/<project>/last-known-good -> <snapshot_id>
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile

MANIFEST = "manifest.json"
MANIFEST_SUM = MANIFEST + ".sha256"
LAST_KNOWN_GOOD = "last-known-good"
BAD_MARKER = "BAD"
FILES_DIR = "files"
FORMAT_VERSION = 1
DEFAULT_BACKUP_ROOT = "/var/backups/lastgood"
BACKUP_ROOT_ARGUMENT_SPEC = dict(backup_root=dict(type="path", default=DEFAULT_BACKUP_ROOT))

# Safe as one path component everywhere: no separators, no leading dot, no "..".
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STAGING_PREFIX = ".staging-"


class ManifestError(Exception):
    """A snapshot that cannot be used; the message is one line for `msg`."""


def check_safe_name(value, what="snapshot id"):
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise ManifestError(
            "%s %r is not a safe name (letters, digits, '.', '_', '-'; no '..', no '/')" % (what, value))
    return value


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def isoformat(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%06dZ" % moment.microsecond


def compact_timestamp(moment):
    """The sortable UTC form used in ids and tags: YYYYmmddTHHMMSSZ."""
    return moment.strftime("%Y%m%dT%H%M%SZ")


def sha256_file(path, chunk_size=1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def project_root(backup_root, project_name):
    return os.path.join(backup_root, check_safe_name(project_name, "project name"))


def snapshot_path(backup_root, project_name, snapshot_id):
    return os.path.join(project_root(backup_root, project_name), check_safe_name(snapshot_id))


def new_snapshot_id(root, moment):
    """A sortable UTC id, unique in `root` (a suffix is added within the same second)."""
    base = compact_timestamp(moment)
    candidate, counter = base, 1
    while os.path.lexists(os.path.join(root, candidate)):
        counter += 1
        candidate = "%s-%d" % (base, counter)
    return candidate


_ID_TIME = re.compile(r"^(\d{8}T\d{6})Z")


def snapshot_order(root, snapshot_id):
    """Sort key of a snapshot: when it was taken, then its id.

    A default id starts with its UTC time. A custom id (snapshot_create's snapshot_id, say
    `release-4.1`) is placed by its manifest's `created_at`, never by its letters: sorted as text
    it would pass for newer than every dated snapshot, for emergency recovery and retention alike.
    """
    match = _ID_TIME.match(snapshot_id)
    if match:
        return match.group(1), snapshot_id
    try:
        with open(os.path.join(root, snapshot_id, MANIFEST), encoding="utf-8") as handle:
            created = json.load(handle).get("created_at")
    except (OSError, ValueError, AttributeError):
        created = None
    return (re.sub(r"[^0-9T]", "", created)[:15] if isinstance(created, str) else ""), snapshot_id


def list_snapshots(root):
    """Ids of complete snapshots (those with a manifest), oldest first (snapshot_order)."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(".") or name == LAST_KNOWN_GOOD or not _SAFE_NAME.fullmatch(name):
            continue
        if os.path.isfile(os.path.join(root, name, MANIFEST)):
            found.append(name)
    return sorted(found, key=lambda snapshot_id: snapshot_order(root, snapshot_id))


def last_known_good(root):
    link = os.path.join(root, LAST_KNOWN_GOOD)
    if not os.path.islink(link):
        return None
    target = os.path.basename(os.readlink(link))
    return target if _SAFE_NAME.fullmatch(target) else None


def set_last_known_good(root, snapshot_id):
    """Point last-known-good at a snapshot atomically (a new link renamed over the old)."""
    check_safe_name(snapshot_id)
    link = os.path.join(root, LAST_KNOWN_GOOD)
    staging = os.path.join(root, ".%s.%d" % (LAST_KNOWN_GOOD, os.getpid()))
    if os.path.lexists(staging):
        os.unlink(staging)
    os.symlink(snapshot_id, staging)
    os.replace(staging, link)
    _fsync_published(root)


def is_bad(snapshot_dir):
    return os.path.exists(os.path.join(snapshot_dir, BAD_MARKER))


def read_bad_marker(snapshot_dir):
    """The snapshot's bad marker as a dict with at least `reason`, or None when it has none.

    Any file named BAD marks the snapshot bad, also one an operator wrote by hand (`touch BAD`,
    a line of text): its first line is then the reason. Whatever it holds, the answer is the
    same as is_bad's, so no caller can promote a snapshot that a rollback refuses.
    """
    try:
        with open(os.path.join(snapshot_dir, BAD_MARKER), "rb") as handle:
            raw = handle.read(4096)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"reason": "marked bad (its marker cannot be read: %s)" % exc.strerror, "marked_at": None}
    try:
        marker = json.loads(raw.decode("utf-8"))
    except ValueError:
        marker = None
    if isinstance(marker, dict):
        return dict(marker, reason=str(marker.get("reason") or "no reason given"), marked_at=marker.get("marked_at"))
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return {"reason": lines[0].strip()[:200] if lines else "no reason given", "marked_at": None}


def write_bad_marker(snapshot_dir, reason, moment):
    _write_atomic(os.path.join(snapshot_dir, BAD_MARKER),
                  json.dumps({"reason": reason, "marked_at": isoformat(moment)}, indent=2) + "\n")


def write_atomic(path, data, mode=0o640, prefix=".tmp-"):
    """Write text or bytes to `path` through a synced temporary file in the same directory, then rename.

    The temporary name starts with `prefix` and ends in random characters, so that a reader of
    a pattern such as `*.prom` or `*.conf` never picks it up.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_write_atomic = write_atomic

# A file created new: never one that exists, never through a symlink, not inherited by children.
NEW_FILE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                  | getattr(os, "O_CLOEXEC", 0))


def create_private(path, mode=0o600):
    """A new file at `path` (NEW_FILE_FLAGS), open for binary writing, with `mode` from its first
    byte: readable by its owner only by default, also while it is being written."""
    return os.fdopen(os.open(path, NEW_FILE_FLAGS, mode), "wb")


def manifest_bytes(manifest):
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def start_staging(root):
    """A private directory next to the snapshots; renamed into place when complete."""
    os.makedirs(root, mode=0o750, exist_ok=True)
    return tempfile.mkdtemp(dir=root, prefix=_STAGING_PREFIX)


def _fsync(path, directory=False):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_published(directory):
    """Sync a rename or replace already done. Best effort: it happened, and the data it published was
    synced before; an error here (a filesystem that cannot sync a directory) must not undo it."""
    try:
        _fsync(directory, directory=True)
    except OSError:
        pass


def sync_tree(top):
    """Put every file and directory under `top` on disk: what a snapshot holds must survive a
    host that crashes right after it became the last known good."""
    for dirpath, _dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path) and os.path.isfile(path):
                _fsync(path)
        _fsync(dirpath, directory=True)


def finish_staging(staging, root, snapshot_id, manifest):
    """Write the manifest and its checksum, put it all on disk, then publish the snapshot by one rename."""
    data = manifest_bytes(manifest)
    with open(os.path.join(staging, MANIFEST), "wb") as handle:
        handle.write(data)
    with open(os.path.join(staging, MANIFEST_SUM), "w", encoding="utf-8") as handle:
        handle.write("%s  %s\n" % (hashlib.sha256(data).hexdigest(), MANIFEST))
    os.chmod(staging, 0o750)
    sync_tree(staging)
    final = os.path.join(root, snapshot_id)
    os.rename(staging, final)
    _fsync_published(root)
    return final


def discard_staging(staging):
    shutil.rmtree(staging, ignore_errors=True)


def load_manifest(snapshot_dir):
    """Read a manifest after verifying its checksum; ManifestError with one line otherwise."""
    path = os.path.join(snapshot_dir, MANIFEST)
    if not os.path.isdir(snapshot_dir):
        raise ManifestError("snapshot %s does not exist" % snapshot_dir)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ManifestError("cannot read %s: %s" % (path, exc.strerror))
    try:
        with open(os.path.join(snapshot_dir, MANIFEST_SUM), encoding="utf-8") as handle:
            expected = handle.read().split()[0]
    except (OSError, IndexError):
        raise ManifestError("manifest checksum file %s is missing or empty" % (path + ".sha256"))
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ManifestError("manifest %s does not match its checksum (expected %s, got %s)"
                            % (path, expected[:12], actual[:12]))
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ManifestError("manifest %s is not valid JSON: %s" % (path, exc))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("services"), dict):
        raise ManifestError("manifest %s has no services mapping" % path)
    return manifest


def verify_files(snapshot_dir, manifest):
    """Names of snapshot file copies whose checksum no longer matches (or that are missing)."""
    damaged = []
    for rel, meta in sorted((manifest.get("files") or {}).items()):
        copy = os.path.join(snapshot_dir, FILES_DIR, rel)
        try:
            if sha256_file(copy) != meta.get("sha256"):
                damaged.append(rel)
        except OSError:
            damaged.append(rel)
    return damaged


def resolve_snapshot(backup_root, project_name, snapshot_id=None):
    """(id, directory) of the requested snapshot, or of last-known-good when no id is given."""
    root = project_root(backup_root, project_name)
    if snapshot_id in (None, "", LAST_KNOWN_GOOD):
        snapshot_id = last_known_good(root)
        if snapshot_id is None:
            raise ManifestError("no last-known-good snapshot for project %s under %s"
                                % (project_name, backup_root))
    check_safe_name(snapshot_id)
    directory = os.path.join(root, snapshot_id)
    if not os.path.isfile(os.path.join(directory, MANIFEST)):
        raise ManifestError("snapshot %s of project %s does not exist under %s"
                            % (snapshot_id, project_name, backup_root))
    return snapshot_id, directory


def retention_plan(root, keep, pending=None, protect=()):
    """Snapshot ids to prune: oldest first beyond `keep`, never last-known-good, the newest or
    those in `protect` (what runs in progress need).

    `pending` is a snapshot about to be written (check mode plans as if it existed).
    """
    # The snapshot about to be written is the newest, whatever its id.
    ids = list_snapshots(root) + ([pending] if pending else [])
    if keep is None or keep <= 0 or len(ids) <= keep:
        return []
    protected = {last_known_good(root), ids[-1]} | set(protect)
    excess = len(ids) - keep
    prune = []
    for snapshot_id in ids:
        if excess <= 0:
            break
        if snapshot_id in protected:
            continue
        prune.append(snapshot_id)
        excess -= 1
    return prune


def stale_staging(root):
    """Leftovers of interrupted snapshot runs."""
    try:
        return sorted(n for n in os.listdir(root) if n.startswith(_STAGING_PREFIX))
    except OSError:
        return []


def load_verified_snapshot(backup_root, project_name, snapshot_id=None, check_files=True, allow_bad=False):
    """(id, directory, manifest) of a snapshot that is safe to roll back onto.

    Resolves the id (last known good by default), verifies the manifest checksum and, with
    `check_files`, every recorded file copy; refuses a snapshot marked bad unless allowed.
    Raises ManifestError with one line naming the problem.
    """
    snapshot_id, directory = resolve_snapshot(backup_root, project_name, snapshot_id)
    manifest = load_manifest(directory)
    marker = None if allow_bad else read_bad_marker(directory)
    if marker:
        raise ManifestError("snapshot %s is marked bad (%s); choose another snapshot" % (snapshot_id, marker["reason"]))
    if check_files:
        damaged = verify_files(directory, manifest)
        if damaged:
            raise ManifestError("snapshot %s is damaged: file copies do not match their sha256: %s"
                                % (snapshot_id, ", ".join(damaged)))
    return snapshot_id, directory, manifest
