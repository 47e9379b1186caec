# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of module_utils/_volumes.py without Docker: the safe-extraction filter against
crafted tar files, extraction that keeps ownership and modes, the tree digest, archives that
are damaged, truncated or do not match their checksum, and volume names."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _volumes as v

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="setting file ownership needs root")
MTIME = 1_700_000_000


# -- crafting archives ---------------------------------------------------------------------------

def member(name, kind=tarfile.REGTYPE, data=b"", linkname="", mode=None, uid=0, gid=0, mtime=MTIME):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.uid = uid
    info.gid = gid
    info.mtime = mtime
    if mode is None:
        mode = 0o755 if kind == tarfile.DIRTYPE else 0o777 if kind == tarfile.SYMTYPE else 0o644
    info.mode = mode
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def d(name, **kw):
    return member(name, tarfile.DIRTYPE, **kw)


def f(name, data=b"x", **kw):
    return member(name, tarfile.REGTYPE, data=data, **kw)


def sym(name, target, **kw):
    return member(name, tarfile.SYMTYPE, linkname=target, **kw)


def hard(name, target, **kw):
    return member(name, tarfile.LNKTYPE, linkname=target, **kw)


def craft(path, members, compress=False, root=True):
    """Write a tar file of `members` (with a root entry first unless told not to); its sha256."""
    with tarfile.open(str(path), "w:gz" if compress else "w", format=tarfile.PAX_FORMAT) as tar:
        if root:
            tar.addfile(*d("."))
        for info, data in members:
            tar.addfile(info, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_all(members, root=True):
    """Run MemberCheck over the members as they come out of a real tar file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if root:
            tar.addfile(*d("."))
        for info, data in members:
            tar.addfile(info, data)
    buffer.seek(0)
    checker = v.MemberCheck()
    with tarfile.open(fileobj=buffer, mode="r") as tar:
        for info in tar:
            checker.check(info)
    checker.finish()
    return checker


def snapshot(root):
    """{relative path: (kind, target or content)} of everything under root, symlinks not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, str(root))
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[rel] = ("dir", None)
            elif not os.path.isfile(path):
                found[rel] = ("special", None)
            else:
                with open(path, "rb") as handle:
                    found[rel] = ("file", handle.read())
    return found


# -- the filter ------------------------------------------------------------------------------------

@pytest.mark.parametrize("members, reason", [
    ([f("../escape")], "leaves the target directory"),
    ([d("a"), f("a/../../escape")], "leaves the target directory"),
    ([f("/etc/evil")], "absolute path"),
    ([f("a//b")], "empty or '.' path component"),
    ([d("a"), f("a/./b")], "empty or '.' path component"),
    ([sym("passwd", "/etc/passwd")], "absolute path /etc/passwd"),
    ([sym("up", "..")], "points outside"),
    ([d("a"), sym("a/up", "../../etc")], "points outside"),
    ([sym("passwd", "/etc/passwd"), f("passwd", b"root::0:0::/:/bin/sh\n")], "absolute path"),
    ([sym("etc", "sub"), f("etc/passwd")], "written through the symlink etc"),
    ([f("target"), hard("link", "/etc/passwd")], "points outside"),
    ([f("target"), hard("link", "../outside")], "points outside"),
    ([hard("link", "later"), f("later")], "not a regular file extracted before"),
    ([d("dir"), hard("link", "dir")], "not a regular file extracted before"),
    ([sym("s", "t"), f("t"), hard("link", "s")], "not a regular file extracted before"),
    ([member("null", tarfile.CHRTYPE)], "device node"),
    ([member("disk", tarfile.BLKTYPE)], "device node"),
    ([member("pipe", tarfile.FIFOTYPE)], "FIFO"),
    ([member("cont", tarfile.CONTTYPE, data=b"")], None),  # contiguous files are regular files
    ([f("x"), f("x")], "appears twice"),
    ([f("a/b")], "comes before its directory a"),
    ([f("file"), f("file/child")], "comes before its directory file"),
    ([sym("s", "loop1"), sym("loop1", "loop2"), sym("loop2", "loop1")], "too many levels"),
    # Each link is inside on its own; followed through "self" (-> .) it leaves the root.
    ([sym("self", "."), sym("escape", "self/..")], "goes above the root"),
    ([sym("escape", "self/.."), sym("self", ".")], "goes above the root"),
    ([d("a"), sym("a/deep", "../b"), sym("b", "a/deep/../..")], "points outside"),
])
def test_filter_refuses(members, reason):
    if reason is None:
        check_all(members)
        return
    with pytest.raises(v.UnsafeMember, match=reason):
        check_all(members)


def test_filter_accepts_links_inside():
    checker = check_all([
        d("a"), d("a/b"), f("a/b/file", b"data"),
        sym("a/rel", "b/file"), sym("a/up", "../a/b"), sym("dangling", "missing/file"),
        sym("a/b/chain", "../rel"), hard("a/b/hard", "a/b/file"),
    ])
    assert checker.summary.entries == 8
    assert checker.summary.files == 1 and checker.summary.hardlinks == 1 and checker.summary.symlinks == 4


def test_filter_refuses_root_that_is_not_a_directory():
    with pytest.raises(v.UnsafeMember, match="root is not a directory"):
        check_all([member(".", tarfile.REGTYPE)], root=False)


@pytest.mark.parametrize("raw, expected", [
    (".", "."), ("./", "."), ("./a", "a"), ("a/", "a"), ("./a/b", "a/b"), ("a b/c;d", "a b/c;d"),
])
def test_member_names_normalized(raw, expected):
    assert v.normalize_member_name(raw) == expected


# -- verification before anything changes ------------------------------------------------------

def test_verify_refuses_malicious_archive_with_correct_checksum(tmp_path):
    archive = tmp_path / "evil.tar"
    digest = craft(archive, [f("good", b"fine"), f("../escape", b"owned")])
    with pytest.raises(v.VolumeError, match=r"refused: member \.\./escape leaves the target directory"):
        v.verify_archive(str(archive), digest)


def test_verify_refuses_checksum_mismatch_of_one_byte(tmp_path):
    archive = tmp_path / "good.tar"
    digest = craft(archive, [f("data", b"A" * 1000)])
    raw = bytearray(archive.read_bytes())
    position = raw.index(b"A" * 1000) + 500
    raw[position] = ord("B")
    archive.write_bytes(bytes(raw))
    with pytest.raises(v.VolumeError, match="does not match its recorded sha256"):
        v.verify_archive(str(archive), digest)


@pytest.mark.parametrize("compress", [False, True])
def test_verify_refuses_truncated_archive(tmp_path, compress):
    archive = tmp_path / "good.tar"
    digest = craft(archive, [f("data", os.urandom(50000))], compress=compress)
    size = archive.stat().st_size
    raw = archive.read_bytes()
    archive.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(v.VolumeError, match="truncated or not the recorded archive"):
        v.verify_archive(str(archive), digest, size)
    # Without the recorded size the checksum still refuses it, and so does reading it.
    with pytest.raises(v.VolumeError, match="does not match its recorded sha256"):
        v.verify_archive(str(archive), digest)
    truncated_digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(v.VolumeError, match="damaged or truncated"):
        v.verify_archive(str(archive), truncated_digest)


def test_verify_refuses_missing_archive_and_missing_checksum(tmp_path):
    with pytest.raises(v.VolumeError, match="cannot be read"):
        v.verify_archive(str(tmp_path / "absent.tar"), "0" * 64)
    archive = tmp_path / "a.tar"
    craft(archive, [])
    with pytest.raises(v.VolumeError, match="no valid sha256 recorded"):
        v.verify_archive(str(archive), None)


# -- extraction -----------------------------------------------------------------------------------

def test_extraction_of_malicious_archive_writes_nothing_outside(tmp_path):
    """Were verification skipped, extraction itself still refuses, and nothing lands outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    for index, members in enumerate([
        [sym("link", "../outside"), f("link/victim", b"overwritten")],
        [sym("passwd", "/etc/passwd"), f("passwd", b"overwritten")],
        [f("../outside/new", b"planted")],
        [f("/tmp/lastgood-absolute-planted", b"planted")],
        [f("t"), hard("h", "../outside/victim")],
        [member("null", tarfile.CHRTYPE)],
        [member("pipe", tarfile.FIFOTYPE)],
    ]):
        archive = tmp_path / ("evil%d.tar" % index)
        digest = craft(archive, members)
        target = tmp_path / ("target%d" % index)
        with pytest.raises(v.VolumeError, match="refused"):
            v.extract_archive(str(archive), str(target), digest)
        assert not os.path.lexists(target / "null") and not os.path.lexists(target / "pipe")
    assert snapshot(outside) == {"victim": ("file", b"untouched")}
    assert not os.path.lexists("/tmp/lastgood-absolute-planted")
    with open("/etc/passwd", "rb") as handle:
        assert b"overwritten" not in handle.read()


@needs_root
def test_extraction_keeps_ownership_and_modes(tmp_path):
    archive = tmp_path / "owners.tar"
    digest = craft(archive, [
        d("shared", mode=0o2775, uid=1000, gid=1001),
        d("tmp", mode=0o1777),
        d("private", mode=0o700, uid=999, gid=999),
        f("private/db", b"rows", mode=0o600, uid=999, gid=999),
        f("tool", b"#!", mode=0o4755, uid=0, gid=0),
        f("shared/doc", b"doc", mode=0o664, uid=1000, gid=1001, mtime=MTIME + 5),
        sym("shared/link", "doc", uid=1000, gid=1001),
        hard("shared/doc2", "shared/doc"),
        d("empty", mode=0o750, uid=33, gid=33),
    ], root=False)
    target = tmp_path / "out"
    summary = v.extract_archive(str(archive), str(target), digest)
    assert summary.entries == 9

    def attrs(rel):
        info = os.lstat(str(target / rel))
        return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid

    assert attrs("shared") == (0o2775, 1000, 1001)
    assert attrs("tmp") == (0o1777, 0, 0)
    assert attrs("private") == (0o700, 999, 999)
    assert attrs("private/db") == (0o600, 999, 999)
    assert attrs("tool") == (0o4755, 0, 0)
    assert attrs("shared/doc") == (0o664, 1000, 1001)
    assert attrs("shared/link")[1:] == (1000, 1001)
    assert attrs("empty") == (0o750, 33, 33)
    assert os.lstat(str(target / "shared/doc")).st_mtime == MTIME + 5
    assert os.lstat(str(target / "shared")).st_mtime == MTIME
    assert os.readlink(str(target / "shared/link")) == "doc"
    assert os.lstat(str(target / "shared/doc2")).st_ino == os.lstat(str(target / "shared/doc")).st_ino
    assert os.listdir(str(target / "empty")) == []


@needs_root
def test_backup_and_extract_round_trip_reproduces_the_tree(tmp_path):
    source = tmp_path / "volume"
    source.mkdir()
    os.chmod(str(source), 0o750)
    os.chown(str(source), 999, 999)
    (source / "media").mkdir()
    (source / "media" / "a.jpg").write_bytes(os.urandom(3000))
    os.chown(str(source / "media" / "a.jpg"), 1000, 1000)
    os.chmod(str(source / "media" / "a.jpg"), 0o640)
    (source / "media" / "empty").mkdir()
    os.symlink("a.jpg", str(source / "media" / "latest"))
    os.link(str(source / "media" / "a.jpg"), str(source / "hard.jpg"))
    (source / "name with space; and 'quotes'").write_text("odd")
    os.mkfifo(str(source / "fifo"))
    for compress in (False, True):
        archive = tmp_path / ("volume.tar" + (".gz" if compress else ""))
        with open(str(archive), "wb") as handle:
            summary, skipped, digest, size = v.write_archive(str(source), handle, compress)
        assert skipped == ["fifo (fifo)"]
        assert size == archive.stat().st_size
        assert digest == hashlib.sha256(archive.read_bytes()).hexdigest()
        verified, has_root = v.verify_archive(str(archive), digest, size)
        assert has_root and verified.digest == summary.digest == v.summarize_tree(str(source)).digest
        assert (summary.entries, summary.files, summary.dirs, summary.symlinks, summary.hardlinks) == (6, 2, 2, 1, 1)
        target = tmp_path / ("restored-%s" % compress)
        v.extract_archive(str(archive), str(target), digest)
        assert v.summarize_tree(str(target)).digest == summary.digest
        info = os.lstat(str(target))
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o750, 999, 999)
        expected = snapshot(source)
        del expected["fifo"]
        assert snapshot(target) == expected


def test_tree_digest_sees_metadata_changes(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "f").write_text("one")
    before = v.summarize_tree(str(root)).digest
    os.chmod(str(root / "f"), 0o600)
    after_chmod = v.summarize_tree(str(root)).digest
    assert after_chmod != before
    os.utime(str(root / "f"), (MTIME, MTIME))
    assert v.summarize_tree(str(root)).digest != after_chmod


def test_path_sample_is_capped_and_reproducible():
    first, second = v.TreeSummary(), v.TreeSummary()
    for summary in (first, second):
        for index in range(v.PATH_SAMPLE * 3):
            summary.add("f", "file%05d" % index, 0o644, 0, 0, 1, MTIME)
    assert first.as_dict()["paths"] == second.as_dict()["paths"]
    assert len(first.as_dict()["paths"]) == v.PATH_SAMPLE
    assert first.as_dict()["paths_complete"] is False
    # Spread over the whole tree, not only its beginning.
    assert max(first.as_dict()["paths"]) > "file%05d" % (v.PATH_SAMPLE * 2)


# -- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["media", "shop_media", "a1", "x.y-z_0", "a" * 255])
def test_volume_names_accepted(name):
    assert v.check_volume_name(name) == name


@pytest.mark.parametrize("name", ["", "a", "media'", 'me"dia', "my media", "media;rm -rf /", "a..b", "..", "../x",
                                  "-media", ".media", "a/b", "media\n", "a" * 256, None, 7])
def test_volume_names_refused(name):
    with pytest.raises(v.VolumeError, match="is refused"):
        v.check_volume_name(name)
