# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of module_utils/_manifest.py: ids, safe names, checksums, last-known-good, retention."""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _manifest as m


def make_snapshot(root, snapshot_id, services=None, files=None):
    staging = m.start_staging(root)
    manifest = {"id": snapshot_id, "services": services or {"app": {"image": "a:1", "image_id": "sha256:1"}},
                "files": {}}
    for rel, content in (files or {}).items():
        path = os.path.join(staging, m.FILES_DIR, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
        manifest["files"][rel] = {"sha256": hashlib.sha256(content.encode()).hexdigest()}
    return m.finish_staging(staging, root, snapshot_id, manifest)


@pytest.mark.parametrize("name", ["20261130T084512Z", "20261130T084512Z-2", "release_1.2", "a"])
def test_safe_names_accepted(name):
    assert m.check_safe_name(name) == name


@pytest.mark.parametrize("name", ["../x", "..", ".hidden", "a/b", "", "x" * 200, "a..b", "na me", "a;b", "abc\n", None, 5])
def test_unsafe_names_refused(name):
    with pytest.raises(m.ManifestError, match="not a safe name"):
        m.check_safe_name(name)


def test_ids_sort_in_time_order_and_are_unique(tmp_path):
    moment = datetime.datetime(2026, 11, 30, 8, 45, 12, tzinfo=datetime.timezone.utc)
    first = m.new_snapshot_id(str(tmp_path), moment)
    assert first == "20261130T084512Z"
    (tmp_path / first).mkdir()
    second = m.new_snapshot_id(str(tmp_path), moment)
    assert second == "20261130T084512Z-2"
    later = m.new_snapshot_id(str(tmp_path), moment + datetime.timedelta(seconds=1))
    assert sorted([later, second, first]) == [first, second, later]


def test_isoformat_is_utc_iso8601():
    moment = datetime.datetime(2026, 11, 30, 8, 45, 12, 5, tzinfo=datetime.timezone.utc)
    assert m.isoformat(moment) == "2026-11-30T08:45:12.000005Z"


def test_manifest_round_trip_and_checksum(tmp_path):
    directory = make_snapshot(str(tmp_path), "s1")
    manifest = m.load_manifest(directory)
    assert manifest["id"] == "s1"
    with open(os.path.join(directory, m.MANIFEST_SUM), encoding="utf-8") as handle:
        digest, name = handle.read().split()
    assert name == m.MANIFEST and digest == m.sha256_file(os.path.join(directory, m.MANIFEST))


def test_one_changed_byte_is_refused(tmp_path):
    directory = make_snapshot(str(tmp_path), "s1")
    path = os.path.join(directory, m.MANIFEST)
    data = bytearray(open(path, "rb").read())
    data[data.index(b"sha256:1")] = ord("t")
    open(path, "wb").write(bytes(data))
    with pytest.raises(m.ManifestError, match="does not match its checksum"):
        m.load_manifest(directory)


def test_broken_json_with_matching_checksum_is_refused(tmp_path):
    directory = make_snapshot(str(tmp_path), "s1")
    broken = b'{"id": "s1", "services": '
    open(os.path.join(directory, m.MANIFEST), "wb").write(broken)
    open(os.path.join(directory, m.MANIFEST_SUM), "w", encoding="utf-8").write(
        "%s  manifest.json\n" % hashlib.sha256(broken).hexdigest())
    with pytest.raises(m.ManifestError, match="not valid JSON"):
        m.load_manifest(directory)


def test_missing_checksum_is_refused(tmp_path):
    directory = make_snapshot(str(tmp_path), "s1")
    os.unlink(os.path.join(directory, m.MANIFEST_SUM))
    with pytest.raises(m.ManifestError, match="checksum file"):
        m.load_manifest(directory)


def test_damaged_file_copy_is_named(tmp_path):
    directory = make_snapshot(str(tmp_path), "s1", files={".env": "A=1\n", "conf/x.conf": "x\n"})
    assert m.verify_files(directory, m.load_manifest(directory)) == []
    with open(os.path.join(directory, m.FILES_DIR, ".env"), "a", encoding="utf-8") as handle:
        handle.write("B=2\n")
    os.unlink(os.path.join(directory, m.FILES_DIR, "conf/x.conf"))
    assert m.verify_files(directory, m.load_manifest(directory)) == [".env", "conf/x.conf"]
    with pytest.raises(m.ManifestError, match="damaged.*.env, conf/x.conf"):
        m.load_verified_snapshot(str(tmp_path.parent), tmp_path.name, "s1")


def test_last_known_good_pointer_and_resolution(tmp_path):
    root = tmp_path / "proj"
    make_snapshot(str(root), "s1")
    make_snapshot(str(root), "s2")
    with pytest.raises(m.ManifestError, match="no last-known-good"):
        m.resolve_snapshot(str(tmp_path), "proj")
    m.set_last_known_good(str(root), "s1")
    assert m.resolve_snapshot(str(tmp_path), "proj")[0] == "s1"
    m.set_last_known_good(str(root), "s2")
    assert os.readlink(str(root / m.LAST_KNOWN_GOOD)) == "s2"
    assert m.resolve_snapshot(str(tmp_path), "proj", "s1")[0] == "s1"
    with pytest.raises(m.ManifestError, match="does not exist"):
        m.resolve_snapshot(str(tmp_path), "proj", "s9")
    with pytest.raises(m.ManifestError, match="not a safe name"):
        m.resolve_snapshot(str(tmp_path), "proj", "../proj/s1")


def test_bad_marker_refused_unless_allowed(tmp_path):
    root = tmp_path / "proj"
    directory = make_snapshot(str(root), "s1")
    m.write_bad_marker(directory, "broke prod", datetime.datetime.now(datetime.timezone.utc))
    with pytest.raises(m.ManifestError, match="marked bad \\(broke prod\\)"):
        m.load_verified_snapshot(str(tmp_path), "proj", "s1")
    assert m.load_verified_snapshot(str(tmp_path), "proj", "s1", allow_bad=True)[0] == "s1"


@pytest.mark.parametrize("content, reason", [
    (b"", "no reason given"),                                   # touch BAD
    (b"broken migration 0042\nsecond line\n", "broken migration 0042"),
    (b'"x"', '"x"'),                                            # JSON, not an object
    (b"{}", "no reason given"),
    (b'{"reason": "by hand"}', "by hand"),
    (b"\xff\xfe", "\ufffd\ufffd"),
])
def test_a_hand_written_bad_marker_marks_the_snapshot_bad(tmp_path, content, reason):
    root = tmp_path / "proj"
    directory = make_snapshot(str(root), "s1")
    (root / "s1" / m.BAD_MARKER).write_bytes(content)
    marker = m.read_bad_marker(directory)
    assert marker and marker["reason"] == reason
    with pytest.raises(m.ManifestError, match="marked bad"):
        m.load_verified_snapshot(str(tmp_path), "proj", "s1")
    assert m.read_bad_marker(make_snapshot(str(root), "s2")) is None


def test_a_custom_id_sorts_by_when_it_was_taken_not_by_its_letters(tmp_path):
    """`release-4.1` sorts after every dated id as text; by its created_at it is the oldest here, so
    retention prunes it first and never the snapshot just written."""
    root = str(tmp_path)
    for snapshot_id, created in [("20261101T000000Z", None), ("release-4.1", "2026-10-01T08:00:00.000000Z"),
                                 ("20261130T000000Z", None), ("zz-no-date", None)]:
        directory = make_snapshot(root, snapshot_id)
        if created:
            path = os.path.join(directory, m.MANIFEST)
            manifest = json.load(open(path, encoding="utf-8"))
            manifest["created_at"] = created
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle)
    # Without a readable time a custom id goes first (oldest): never wrongly the newest.
    assert m.list_snapshots(root) == ["zz-no-date", "release-4.1", "20261101T000000Z", "20261130T000000Z"]
    m.set_last_known_good(root, "20261101T000000Z")
    assert m.retention_plan(root, 2) == ["zz-no-date", "release-4.1"]
    assert m.retention_plan(root, 4, pending="custom-new") == ["zz-no-date"]


def test_staging_is_invisible_until_published(tmp_path):
    staging = m.start_staging(str(tmp_path))
    assert m.list_snapshots(str(tmp_path)) == []
    assert m.stale_staging(str(tmp_path)) == [os.path.basename(staging)]
    m.finish_staging(staging, str(tmp_path), "s1", {"id": "s1", "services": {}})
    assert m.list_snapshots(str(tmp_path)) == ["s1"]
    assert json.load(open(str(tmp_path / "s1" / m.MANIFEST)))["id"] == "s1"


def test_retention_keeps_last_known_good_and_newest(tmp_path):
    root = str(tmp_path)
    for index in range(1, 6):
        make_snapshot(root, "s%d" % index)
    m.set_last_known_good(root, "s1")
    # keep 2 of 5: the oldest go first, but s1 (last known good) and s5 (newest) stay.
    assert m.retention_plan(root, 2) == ["s2", "s3", "s4"]
    assert m.retention_plan(root, 0) == []
    assert m.retention_plan(root, 10) == []
    # check mode plans as if the pending snapshot existed already
    assert m.retention_plan(root, 5, pending="s6") == ["s2"]


def test_sync_tree_puts_files_and_directories_on_disk_and_passes_over_links(tmp_path):
    (tmp_path / "volumes").mkdir()
    (tmp_path / "volumes" / "pgdata.tar").write_bytes(b"x" * 10)
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "dangling").symlink_to(tmp_path / "absent")
    (tmp_path / "linked-dir").symlink_to(tmp_path / "volumes")
    m.sync_tree(str(tmp_path))  # no error: a link is never opened (O_NOFOLLOW would refuse it)
