# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the configuration tier (plugins/module_utils/_config.py)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _config
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import finish_staging, set_last_known_good, start_staging

MANIFEST = {
    "id": "20261130T084512Z",
    "project": {"compose_files": ["compose.yaml"]},
    "files": {
        "compose.yaml": {"sha256": "a", "size": 1, "mode": "0644"},
        ".env": {"sha256": "b", "size": 1, "mode": "0600"},
        "nginx/site.conf": {"sha256": "c", "size": 1, "mode": "0644"},
        "certs/site.crt": {"sha256": "d", "size": 1, "mode": "0644"},
    },
}


def test_every_recorded_file_by_default():
    assert _config.choose_files(MANIFEST, []) is None
    assert sorted(_config.select_files(MANIFEST)) == [".env", "certs/site.crt", "compose.yaml", "nginx/site.conf"]


def test_patterns_always_bring_the_compose_files_and_env():
    assert _config.choose_files(MANIFEST, ["nginx/*"]) == [".env", "compose.yaml", "nginx/site.conf"]


def test_a_pattern_matching_nothing_is_refused():
    with pytest.raises(_config.ConfigError, match="config_files tls/\\* match no file"):
        _config.choose_files(MANIFEST, ["tls/*"])


@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside", "a/../../b", ""])
def test_paths_outside_the_project_are_refused(rel):
    with pytest.raises(_config.ConfigError):
        _config.safe_relative(rel)


def test_changed_keys_name_keys_only(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    before.write_text("A=1\nSECRET=old\nGONE=x\n")
    after.write_text("A=1\nSECRET=new\nNEW=y\n")
    assert _config.changed_keys(str(before), str(after)) == ["GONE", "NEW", "SECRET"]


def test_the_diff_of_an_env_file_never_shows_values(tmp_path):
    live, staged = tmp_path / "live.env", tmp_path / "staged.env"
    live.write_text("POSTGRES_PASSWORD=hunter2-live\nAPP_PORT=1\n")
    staged.write_text("POSTGRES_PASSWORD=hunter2-good\nAPP_PORT=1\n")
    entry = _config.file_diff(".env", str(live), str(staged), {"sha256": "x", "mode": "0600"}, {"sha256": "y"})
    text = json.dumps(entry)
    assert "hunter2" not in text
    assert "POSTGRES_PASSWORD=********" in entry["before"] and "POSTGRES_PASSWORD=********" in entry["after"]
    assert "APP_PORT" not in entry["before"].split("\n", 1)[1]


def test_the_diff_of_a_private_key_shows_checksums_only(tmp_path):
    live, staged = tmp_path / "live.key", tmp_path / "staged.key"
    live.write_text("-----BEGIN PRIVATE KEY-----\nlive\n")
    staged.write_text("-----BEGIN PRIVATE KEY-----\ngood\n")
    entry = _config.file_diff("certs/site.key", str(live), str(staged), {"sha256": "x", "mode": "0600"},
                              {"sha256": "y", "mode": "0600"})
    assert entry["before"] == "sha256 x, mode 0600\n" and entry["after"] == "sha256 y, mode 0600\n"


def test_the_diff_of_a_small_text_file_shows_both_texts(tmp_path):
    live, staged = tmp_path / "live", tmp_path / "staged"
    live.write_text("listen 1;\n")
    staged.write_text("listen 2;\n")
    entry = _config.file_diff("nginx/site.conf", str(live), str(staged), {"sha256": "x", "mode": "0644"}, {"sha256": "y"})
    assert (entry["before"], entry["after"]) == ("listen 1;\n", "listen 2;\n")


def test_services_to_recreate():
    accepted = {"app": {"h1", "h1-nodeps"}, "db": {"h2"}, "new": {"h3"}, "stopped": {"h4"}}
    live = {"app": ["h1-nodeps"], "db": ["old"]}
    assert _config.services_to_recreate(accepted, live, recorded_running=["new"]) == ["db", "new"]


def test_a_resolved_model_is_escaped_and_loses_depends_on():
    config = {"services": {"app": {"command": ["echo", "$HOME"], "depends_on": {"db": {}}}, "db": {}}}
    model = _config.without_dependencies(config)
    assert model == {"services": {"app": {"command": ["echo", "$$HOME"]}, "db": {}}}
    assert "depends_on" in config["services"]["app"]  # the original is left alone


def test_parse_hashes():
    assert _config.parse_hashes("app 1a\ndb 2b\n\n") == {"app": "1a", "db": "2b"}


def test_nginx_mounts_put_staged_files_over_the_live_ones():
    spec = {"volumes": [
        {"type": "bind", "source": "/p/nginx/nginx.conf", "target": "/etc/nginx/nginx.conf"},
        {"type": "bind", "source": "/p/conf.d", "target": "/etc/nginx/conf.d"},
        {"type": "volume", "source": "data", "target": "/data"},
    ]}
    args = _config.nginx_mounts(spec, "/p", "/s", ["nginx/nginx.conf", "conf.d/site.conf", ".env"])
    assert args == ["-v", "/s/nginx/nginx.conf:/etc/nginx/nginx.conf:ro",
                    "-v", "/p/conf.d:/etc/nginx/conf.d:ro",
                    "-v", "/s/conf.d/site.conf:/etc/nginx/conf.d/site.conf:ro"]


def test_services_mounting_a_changed_file(tmp_path):
    (tmp_path / "conf.d").mkdir()
    config = {"services": {
        "web": {"volumes": [{"type": "bind", "source": str(tmp_path / "conf.d"), "target": "/etc/x"}]},
        "app": {"volumes": [{"type": "bind", "source": str(tmp_path / "other.conf"), "target": "/etc/y"}]},
        "db": {},
    }}
    assert _config.services_mounting(config, str(tmp_path), ["conf.d/site.conf"]) == ["web"]
    assert _config.services_mounting(config, str(tmp_path), [".env"]) == []


def _pair():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_tls_pairs(tmp_path):
    cert, key = _pair()
    _other_cert, other_key = _pair()
    (tmp_path / "c").write_bytes(cert)
    (tmp_path / "k").write_bytes(key)
    (tmp_path / "o").write_bytes(other_key)
    (tmp_path / "junk").write_text("not a key")
    assert _config.tls_pair_problem(str(tmp_path / "c"), str(tmp_path / "k")) is None
    assert _config.tls_pair_problem(str(tmp_path / "c"), str(tmp_path / "o")) == "the certificate does not belong to the key"
    assert "not an unencrypted" in _config.tls_pair_problem(str(tmp_path / "c"), str(tmp_path / "junk"))
    assert "not PEM or DER" in _config.tls_pair_problem(str(tmp_path / "junk"), str(tmp_path / "k"))


def test_stage_record_and_install(tmp_path):
    project, snapshot = tmp_path / "project", tmp_path / "snapshot"
    (snapshot / "files").mkdir(parents=True)
    project.mkdir()
    (snapshot / "files" / ".env").write_text("A=good\n")
    (project / ".env").write_text("A=bad\n")
    good = hashlib.sha256(b"A=good\n").hexdigest()
    selected = {".env": {"sha256": good, "mode": "0600"}}
    staging = tmp_path / "staging"
    staging.mkdir()
    _config.stage(str(snapshot), selected, str(staging))
    live = _config.current_state(str(project), ".env")
    plan = {".env": {"live": live, "sha256": good, "changes": True}}
    moment = datetime.datetime(2026, 11, 30, 10, 0, tzinfo=datetime.timezone.utc)
    record_dir = _config.new_record_dir(str(snapshot), moment)
    document = _config.write_record(record_dir, str(project), plan, "s1", "p", moment)
    assert document["files"][".env"]["sha256"] == hashlib.sha256(b"A=bad\n").hexdigest()
    assert (tmp_path / "snapshot" / "rollbacks" / "20261130T100000Z" / "files" / ".env").read_text() == "A=bad\n"
    _config.install(str(project), str(staging), ".env", 0o600)
    assert (project / ".env").read_text() == "A=good\n"
    assert oct(os.stat(project / ".env").st_mode & 0o777) == "0o600"
    assert _config.new_record_dir(str(snapshot), moment).endswith("20261130T100000Z-2")


def test_a_damaged_copy_is_refused_when_staged(tmp_path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / ".env").write_text("A=tampered\n")
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(_config.ConfigError, match="do not match their sha256: .env"):
        _config.stage(str(tmp_path), {".env": {"sha256": "0" * 64}}, str(staging))


def test_the_project_is_found_by_its_directory_when_compose_cannot_say(tmp_path):
    root = tmp_path / "backups" / "shop"
    staging = start_staging(str(root))
    finish_staging(staging, str(root), "s1", {"id": "s1", "services": {}, "project": {"dir": str(tmp_path / "shop")}})
    set_last_known_good(str(root), "s1")
    assert _config.project_name_from_snapshots(str(tmp_path / "backups"), str(tmp_path / "shop")) == "shop"
    assert _config.project_name_from_snapshots(str(tmp_path / "backups"), str(tmp_path / "other")) is None


class WarningModule:
    def __init__(self):
        self.warnings = []

    @staticmethod
    def get_bin_path(name, required=False):
        return "/usr/bin/" + name

    def warn(self, message):
        self.warnings.append(message)


def files_to_use(tmp_path, named, compose_files):
    module = WarningModule()
    manifest = dict(MANIFEST, project={"compose_files": compose_files})
    restore = _config.ConfigRestore(module, None, str(tmp_path), named, "p", MANIFEST["id"], str(tmp_path), manifest)
    return restore.compose_files, module.warnings


def test_compose_files_are_used_by_the_path_their_content_is_recorded_under(tmp_path):
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    (tmp_path / "prod.yaml").symlink_to("compose.yaml")
    base = os.path.realpath(tmp_path)
    assert files_to_use(tmp_path, ["prod.yaml", os.path.join(base, "compose.yaml")], []) == (
        ["compose.yaml", "compose.yaml"], [])


def test_an_override_neither_recorded_nor_on_the_host_is_left_out_as_compose_would(tmp_path):
    used, warnings = files_to_use(tmp_path, None, ["compose.yaml", "compose.override.yaml"])
    assert used == ["compose.yaml"]
    assert warnings == ["compose file compose.override.yaml is neither recorded in snapshot %s nor on the host: left"
                        " out, as compose would leave it out" % MANIFEST["id"]]
    (tmp_path / "compose.override.yaml").symlink_to("/etc/hostname")
    assert files_to_use(tmp_path, None, ["compose.yaml", "compose.override.yaml"]) == (
        ["compose.yaml", "compose.override.yaml"], [])
