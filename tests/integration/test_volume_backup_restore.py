"""volume_backup and volume_restore against the real engine: named volumes of disposable compose
stacks (busybox services that mount them, host networking, nothing listening).

The modules run the way Ansible runs them on a host (pg_server.run_module: ``python -m`` with
an arguments file); one test drives volume_restore through ansible-playbook for the
check/real/check/real cycle; one calls the Python API the snapshot module uses.
Every stack, with its volumes, is removed after its test, pass or fail.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import sys
import tarfile
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

from ansible_collections.lastgood.rollback.plugins.module_utils import _compose, _volumes  # noqa: E402

BUSYBOX = "lastgood-bench/busybox:1"
# Exits at once on SIGTERM, so that stopping takes milliseconds, not the 10 s grace period.
IDLE = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


class VolumeStack:
    """A compose project `lgv<hex>` with two idle services, each mounting its own named volume."""

    def __init__(self, parent, client):
        self.client = client
        self.project = "lgv%s" % secrets.token_hex(4)
        self.dir = Path(parent) / self.project
        self.dir.mkdir()
        spec = {
            "name": self.project,
            "services": {
                "media": {"image": BUSYBOX, "network_mode": "host", "command": IDLE, "volumes": ["media:/srv/media"]},
                "other": {"image": BUSYBOX, "network_mode": "host", "command": IDLE, "volumes": ["other:/srv/other"]},
            },
            "volumes": {"media": {}, "other": {}},
        }
        (self.dir / "compose.yaml").write_text(json.dumps(spec, indent=2))  # JSON is YAML

    def compose(self, *args, check=True):
        return stacks.run(["docker", "compose", *args], cwd=self.dir, env=stacks.clean_env(), check=check)

    def up(self):
        self.compose("up", "-d")
        stacks.wait_until(lambda: all(self.container(s)["State"]["Running"] for s in ("media", "other")), 30,
                          message="%s running" % self.project)

    def destroy(self):
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "1", check=False)
        for key in ("media", "other"):
            try:
                self.client.api.remove_volume(self.volume(key), force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def volume(self, key="media"):
        return "%s_%s" % (self.project, key)

    def mountpoint(self, key="media"):
        return Path(self.client.api.inspect_volume(self.volume(key))["Mountpoint"])

    def container(self, service):
        found = self.client.api.containers(all=True, filters={"label": [
            "com.docker.compose.project=%s" % self.project, "com.docker.compose.service=%s" % service]})
        assert len(found) == 1, found
        return self.client.api.inspect_container(found[0]["Id"])

    def identity(self, service):
        """(container ID, StartedAt, running): what a stop and start changes."""
        attrs = self.container(service)
        return attrs["Id"], attrs["State"]["StartedAt"], attrs["State"]["Running"]

    def leftovers(self, key="media"):
        """Staging and safety directories beside the volume's data directory."""
        parent = self.mountpoint(key).parent
        return sorted(n for n in os.listdir(parent) if n != "_data")


@pytest.fixture
def vstack(demo_images, docker_client, tmp_path):
    made = []

    def factory():
        stack = VolumeStack(tmp_path, docker_client)
        made.append(stack)
        stack.up()
        return stack

    yield factory
    for stack in made:
        stack.destroy()


def populate(root):
    """Files of several owners and modes, a symlink, a hard link, empty and special dirs, odd names."""
    root = Path(root)
    os.chown(root, 1000, 1000)
    os.chmod(root, 0o755)
    layout = [
        ("photos", "dir", 0o755, 1000, 1000),
        ("photos/2026", "dir", 0o750, 1000, 1000),
        ("photos/2026/a.jpg", os.urandom(20000), 0o640, 1000, 1000),
        ("photos/2026/b.jpg", os.urandom(3000), 0o644, 33, 33),
        ("private", "dir", 0o700, 999, 999),
        ("private/secret", b"s3cr3t\n", 0o600, 999, 999),
        ("shared", "dir", 0o2775, 1000, 1001),
        ("tmp", "dir", 0o1777, 0, 0),
        ("cache", "dir", 0o755, 33, 33),
        ("cache/empty", "dir", 0o750, 33, 33),
        ("bin-tool", b"#!/bin/sh\n", 0o4755, 0, 0),
        ("odd name 'q' \"dq\";x.txt", b"odd\n", 0o644, 1000, 1000),
    ]
    for rel, content, mode, uid, gid in layout:
        path = root / rel
        if content == "dir":
            path.mkdir()
        else:
            path.write_bytes(content)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    os.symlink("photos/2026/a.jpg", root / "latest")
    os.lchown(root / "latest", 1000, 1000)
    os.link(root / "photos/2026/a.jpg", root / "photos/a-copy.jpg")


def tree(root):
    """{relative path: (kind, mode, uid, gid, mtime, content sha256 or link target)}, the root as '.'."""
    root = str(root)
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["."] if dirpath == root else []:
            info = os.lstat(root)
            found[name] = ("d", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, int(info.st_mtime), None)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                extra, kind = os.readlink(path), "l"
            elif stat.S_ISDIR(info.st_mode):
                extra, kind = None, "d"
            else:
                with open(path, "rb") as handle:
                    extra, kind = hashlib.sha256(handle.read()).hexdigest(), "f"
            found[rel] = (kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, int(info.st_mtime), extra)
    return found


def run(module, args, check=False):
    return pg_server.run_module(module, args, check=check, timeout=300)


def ok(module, args, check=False):
    result = run(module, args, check=check)
    assert not result.failed, result.describe()
    return result.result


def refused(module, args, check=False):
    result = run(module, args, check=check)
    assert result.failed, result.describe()
    msg = result.result["msg"]
    assert "\n" not in msg
    return msg


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def as_record(result):
    """A module result as a registered variable holds it: without the controller's own keys
    (the raw `warnings` of ansible-core 2.19 are typed objects a module cannot take as input)."""
    return {key: value for key, value in result.items() if key not in ("warnings", "invocation", "changed", "actions")}


def backup(stack, tmp_path, name="media.tar", **extra):
    """Run volume_backup; (archive path, the module result less the controller's keys, warnings text)."""
    dest = tmp_path / name
    result = ok("volume_backup", dict({"volume": stack.volume(), "dest": str(dest)}, **extra))
    assert result["sha256"] == sha256(dest) and result["size"] == dest.stat().st_size
    record = as_record(result)
    record["warnings_text"] = json.dumps(result.get("warnings") or [])
    return dest, record


def test_round_trip_keeps_owners_modes_links_and_stops_only_the_owner(vstack, tmp_path):
    stack = vstack()
    mount = stack.mountpoint()
    populate(mount)
    original = tree(mount)

    planned = ok("volume_backup", {"volume": stack.volume(), "dest": str(tmp_path / "media.tar")}, check=True)
    assert planned["changed"] is True and not (tmp_path / "media.tar").exists()
    archive, recorded = backup(stack, tmp_path)
    assert recorded["entries"] == len(original) - 1  # the root is not an entry
    assert (recorded["files"], recorded["hardlinks"], recorded["symlinks"]) == (5, 1, 1)
    assert recorded["paths_complete"] is True and "latest" in recorded["paths"]
    assert "may be archived in an inconsistent state" in recorded.pop("warnings_text"), recorded
    assert [c["service"] for c in recorded["containers"]] == ["media"]

    # The deploy that went wrong: files deleted, changed, added.
    (mount / "photos/2026/a.jpg").unlink()
    (mount / "private/secret").write_text("changed")
    (mount / "new-upload.bin").write_bytes(b"new")
    os.chmod(mount / "shared", 0o700)
    assert tree(mount) != original
    media_before, other_before = stack.identity("media"), stack.identity("other")

    result = ok("volume_restore", {"volume": stack.volume(), "archive": str(archive), "recorded": recorded,
                                   "snapshot_id": "20261130T084512Z"})
    assert result["changed"] is True
    assert tree(mount) == original
    assert result["containers_stopped"] == ["%s-media-1" % stack.project]
    assert result["downtime"]["seconds"] > 0 and result["missing_paths"] == []
    media_after = stack.identity("media")
    assert media_after[0] == media_before[0] and media_after[1] != media_before[1] and media_after[2]
    assert stack.identity("other") == other_before
    # The restarted container sees the restored data, not the renamed directory.
    listing = stack.compose("exec", "-T", "media", "ls", "-ln", "/srv/media/photos/2026").stdout
    assert "a.jpg" in listing and " 1000 " in listing
    # The previous content is kept beside it until told otherwise.
    previous = mount.parent / "_data.before-20261130T084512Z"
    assert (previous / "new-upload.bin").read_bytes() == b"new"
    assert result["previous_path"] == str(previous) and stack.leftovers() == [previous.name]
    assert result["diff"]["after"].startswith("entries: %d" % recorded["entries"])

    again = ok("volume_restore", {"volume": stack.volume(), "archive": str(archive), "recorded": recorded,
                                  "snapshot_id": "20261130T084512Z"})
    assert again["changed"] is False and again["downtime"] is None
    assert stack.identity("media") == media_after

    # keep_previous: false drops the safety copy once the restore succeeded.
    (mount / "photos/2026/b.jpg").unlink()
    dropped = ok("volume_restore", {"volume": stack.volume(), "archive": str(archive), "sha256": recorded["sha256"],
                                    "keep_previous": False, "snapshot_id": "second"})
    assert dropped["changed"] is True and dropped["previous_path"] is None
    assert tree(mount) == original and stack.leftovers() == [previous.name]


def test_gzip_backup_with_stopped_users_round_trips(vstack, tmp_path):
    stack = vstack()
    mount = stack.mountpoint()
    populate(mount)
    original = tree(mount)
    media_before, other_before = stack.identity("media"), stack.identity("other")
    archive, recorded = backup(stack, tmp_path, "media.tar.gz", compress=True, quiesce="stop", stop_timeout=5)
    assert recorded["compression"] == "gzip" and Path(archive).read_bytes()[:2] == b"\x1f\x8b"
    assert recorded["downtime"]["seconds"] > 0 and "inconsistent" not in recorded.pop("warnings_text")
    assert stack.identity("media")[1] != media_before[1] and stack.identity("media")[2]
    assert stack.identity("other") == other_before
    for rel in ("photos", "private", "tmp"):
        shutil.rmtree(mount / rel)
    ok("volume_restore", {"volume": stack.volume(), "archive": str(archive), "recorded": recorded})
    assert tree(mount) == original


def test_empty_volume_round_trip_and_pause(vstack, tmp_path):
    stack = vstack()
    mount = stack.mountpoint()
    archive, recorded = backup(stack, tmp_path, quiesce="pause")
    assert recorded["entries"] == 0 and recorded["downtime"] is not None
    assert stack.container("media")["State"]["Status"] == "running"
    (mount / "later").write_text("x")
    ok("volume_restore", {"volume": stack.volume(), "archive": str(archive), "recorded": recorded})
    assert os.listdir(mount) == []


def craft_archive(path, members):
    """A tar file with a root entry and `members` [(TarInfo, bytes or None)]; its sha256."""
    with tarfile.open(str(path), "w", format=tarfile.PAX_FORMAT) as tar:
        root = tarfile.TarInfo(".")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(root)
        for info, data in members:
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return sha256(path)


def info(name, kind=tarfile.REGTYPE, linkname="", mode=0o644):
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.mode, member.mtime = kind, linkname, mode, int(time.time())
    if kind == tarfile.CHRTYPE:
        member.devmajor, member.devminor = 1, 3
    return member


ABSOLUTE_TARGET = "/tmp/lastgood-test-absolute-%s" % secrets.token_hex(4)
MALICIOUS = {
    "dotdot": [(info("ok.txt"), b"fine"), (info("../escape"), b"escaped")],
    "deep-dotdot": [(info("photos", tarfile.DIRTYPE, mode=0o755), None), (info("photos/../../../escape"), b"escaped")],
    "absolute": [(info(ABSOLUTE_TARGET), b"planted")],
    "symlink-write": [(info("passwd", tarfile.SYMTYPE, "/etc/passwd"), None),
                      (info("passwd"), b"root::0:0:root:/root:/bin/sh\n")],
    "relative-symlink-write": [(info("up", tarfile.SYMTYPE, "../../../../../../../../etc"), None),
                               (info("up/passwd"), b"root::0:0:root:/root:/bin/sh\n")],
    "device": [(info("null", tarfile.CHRTYPE, mode=0o666), None)],
    "hardlink-out": [(info("a.txt"), b"a"), (info("shadow", tarfile.LNKTYPE, "/etc/shadow"), None)],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archive_with_correct_checksum_is_refused(vstack, tmp_path, case):
    stack = vstack()
    mount = stack.mountpoint()
    populate(mount)
    before = tree(mount)
    volume_dir = mount.parent
    around = sorted(os.listdir(volume_dir.parent))
    passwd, shadow = sha256("/etc/passwd"), sha256("/etc/shadow")
    media = stack.identity("media")
    archive = tmp_path / ("%s.tar" % case)
    digest = craft_archive(archive, MALICIOUS[case])

    msg = refused("volume_restore", {"volume": stack.volume(), "archive": str(archive), "sha256": digest})
    assert "is refused" in msg, msg
    assert tree(mount) == before
    assert stack.leftovers() == []
    assert sorted(os.listdir(volume_dir.parent)) == around
    assert not os.path.lexists(volume_dir / "escape") and not os.path.lexists(volume_dir.parent / "escape")
    assert not os.path.lexists(ABSOLUTE_TARGET)
    assert (sha256("/etc/passwd"), sha256("/etc/shadow")) == (passwd, shadow)
    assert stack.identity("media") == media


def test_damaged_truncated_or_missing_archive_is_refused_before_any_change(vstack, tmp_path):
    stack = vstack()
    mount = stack.mountpoint()
    populate(mount)
    archive, recorded = backup(stack, tmp_path)
    (mount / "written-after-backup").write_text("must survive")
    before = tree(mount)
    media = stack.identity("media")
    raw = archive.read_bytes()

    flipped = tmp_path / "flipped.tar"
    data = bytearray(raw)
    data[len(data) // 3] ^= 0x01
    flipped.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(raw[:len(raw) // 2])
    cases = [
        (flipped, recorded, "does not match its recorded sha256"),
        (truncated, recorded, "it is truncated or not the recorded archive"),
        (truncated, {"sha256": recorded["sha256"]}, "does not match its recorded sha256"),
        (tmp_path / "absent.tar", recorded, "cannot be read"),
    ]
    for path, record, expected in cases:
        msg = refused("volume_restore", {"volume": stack.volume(), "archive": str(path), "recorded": record})
        assert expected in msg, msg
        assert tree(mount) == before
        assert stack.leftovers() == []
        assert stack.identity("media") == media
    # A recorded file list that does not belong to the archive is refused as well.
    other = dict(recorded, tree_digest="0" * 64)
    msg = refused("volume_restore", {"volume": stack.volume(), "archive": str(archive), "recorded": other})
    assert "does not hold the recorded file list" in msg
    assert tree(mount) == before and stack.identity("media") == media


def test_check_mode_changes_nothing(vstack, tmp_path):
    stack = vstack()
    mount = stack.mountpoint()
    populate(mount)
    archive, recorded = backup(stack, tmp_path)
    (mount / "photos/2026/a.jpg").unlink()
    before = tree(mount)
    media = stack.identity("media")
    planned = ok("volume_restore", {"volume": stack.volume(), "archive": str(archive), "recorded": recorded},
                 check=True)
    assert planned["changed"] is True
    assert any(a.startswith("stop container(s) %s-media-1" % stack.project) for a in planned["actions"])
    assert planned["containers_stopped"] == [] and planned["downtime"] is None
    assert tree(mount) == before and stack.leftovers() == [] and stack.identity("media") == media
    # Check mode verifies the archive completely too.
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[:-2000])
    msg = refused("volume_restore", {"volume": stack.volume(), "archive": str(truncated), "recorded": recorded},
                  check=True)
    assert "truncated" in msg


BAD_NAMES = ["media'", 'me"dia', "my media", "media;id", "..", "a..b", "../etc", "$(id)", "-v", "media\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_volume_names_are_refused(docker_client, tmp_path, name):
    volumes = sorted(v.name for v in docker_client.volumes.list())
    msg = refused("volume_backup", {"volume": name, "dest": str(tmp_path / "x.tar")})
    assert "is refused" in msg and not (tmp_path / "x.tar").exists()
    archive = tmp_path / "a.tar"
    digest = craft_archive(archive, [])
    msg = refused("volume_restore", {"volume": name, "archive": str(archive), "sha256": digest})
    assert "is refused" in msg
    # No volume was created (other tests' stacks may remove theirs meanwhile).
    assert set(v.name for v in docker_client.volumes.list()) <= set(volumes)


def test_missing_volume_and_existing_dest(vstack, tmp_path):
    stack = vstack()
    archive, recorded = backup(stack, tmp_path)
    msg = refused("volume_backup", {"volume": stack.volume(), "dest": str(archive)})
    assert "exists; use force: true" in msg
    forced = ok("volume_backup", {"volume": stack.volume(), "dest": str(archive), "force": True})
    assert forced["sha256"] == sha256(archive)
    msg = refused("volume_restore", {"volume": stack.project + "_absent", "archive": str(archive), "recorded": recorded})
    assert "does not exist" in msg


def api_module():
    with patch_module_args({}):
        return AnsibleModule(argument_spec={})


def test_python_api_resolves_compose_volume_keys(vstack, docker_client, tmp_path):
    stack = vstack()
    mount = stack.mountpoint()
    populate(mount)
    original = tree(mount)
    module = api_module()
    recorded = _volumes.backup_volume(module, docker_client, stack.volume(), str(tmp_path / "m.tar"))
    (mount / "private/secret").unlink()
    project = _compose.ComposeProject(module, str(stack.dir))
    planned = _volumes.restore_volume(module, docker_client, project, "media", recorded["file"], recorded, "api1",
                                      check_mode=True)
    assert planned["volume"] == stack.volume() and planned["changed"] is True and "private/secret" not in tree(mount)
    done = _volumes.restore_volume(module, docker_client, project, "media", recorded["file"], recorded, "api1")
    assert done["changed"] is True and tree(mount) == original
    with pytest.raises(_volumes.VolumeError, match="snapshot id"):
        _volumes.restore_volume(module, docker_client, project, "media", recorded["file"], recorded, "../x")


def test_restore_cycle_through_ansible(vstack, tmp_path):
    """check, real, check, real: the check run predicts the real one and changes nothing; the second
    real run changes nothing."""
    stack = vstack()
    mount = stack.mountpoint()
    populate(mount)
    original = tree(mount)
    archive, recorded = backup(stack, tmp_path)
    (mount / "photos/2026/b.jpg").unlink()
    inventory = ansible_run.write_inventory(tmp_path, {})
    cycle = ansible_run.run_cycle(
        inventory, "volume_restore",
        {"volume": stack.volume(), "archive": str(archive), "recorded": recorded, "snapshot_id": "cycle"}, tmp_path,
        observe=[{"ansible.builtin.command": {"argv": ["ls", "-lnRA", "--time-style=+%s", str(mount)]}}])
    results = cycle.results
    assert results["check"]["changed"] is True and results["run"]["changed"] is True
    assert results["check"]["actions"] == results["run"]["actions"]
    assert results["check again"]["changed"] is False and results["run again"]["changed"] is False
    listing = {label: seen[0]["stdout"] for label, seen in cycle.observed.items()}
    assert listing["before"] == listing["check"] and "b.jpg" not in listing["before"]
    assert "b.jpg" in listing["run"] and listing["run"] == listing["check again"] == listing["run again"]
    assert tree(mount) == original


def test_failed_swap_puts_the_live_data_back(vstack, docker_client, tmp_path, monkeypatch):
    """The second rename (staging -> _data) fails: the first is undone, the containers run again."""
    stack = vstack()
    mount = stack.mountpoint()
    populate(mount)
    module = api_module()
    recorded = _volumes.backup_volume(module, docker_client, stack.volume(), str(tmp_path / "m.tar"))
    (mount / "changed-after-backup").write_text("keep me")
    before = tree(mount)
    real_rename = os.rename
    calls = []

    def rename_failing_second(source, target):
        calls.append((str(source), str(target)))
        if len(calls) == 2:
            raise OSError(18, "Invalid cross-device link (injected)")
        return real_rename(source, target)

    monkeypatch.setattr(_volumes.os, "rename", rename_failing_second)
    with pytest.raises(_volumes.VolumeError, match="failed before the swap, the volume is unchanged") as caught:
        _volumes.restore_volume(module, docker_client, None, stack.volume(), recorded["file"], recorded, "swap1")
    monkeypatch.undo()
    assert [Path(c[1]).name for c in calls] == ["_data.before-swap1", "_data", "_data"]
    assert tree(mount) == before and stack.leftovers() == []
    assert stack.identity("media")[2] is True
    assert caught.value.result["downtime"]["seconds"] > 0


def test_a_user_that_will_not_start_again_does_not_cost_the_complete_archive(vstack, docker_client, tmp_path,
                                                                             monkeypatch):
    """quiesce=stop, and the engine refuses to start the volume's user again (a port taken meanwhile,
    a bind mount gone): the backup fails saying so, and keeps the archive it completed."""
    stack = vstack()
    populate(stack.mountpoint())
    real_start = docker_client.api.start

    def refuse_start(container, *args, **kwargs):
        raise _volumes.APIError("driver failed programming external connectivity (injected)")

    monkeypatch.setattr(docker_client.api, "start", refuse_start)
    dest = tmp_path / "kept.tar"
    with pytest.raises(_volumes.VolumeError, match=r"cannot start container\(s\) again: .*injected.*is complete") as caught:
        _volumes.backup_volume(api_module(), docker_client, stack.volume(), str(dest), quiesce="stop")
    monkeypatch.undo()
    assert "\n" not in caught.value.msg
    assert dest.exists() and not list(tmp_path.glob("kept.tar.part-*"))
    with tarfile.open(dest) as archive:
        names = archive.getnames()
        assert any(name.endswith("photos/2026/a.jpg") for name in names), names[:10]
    real_start(stack.container("media")["Id"])
