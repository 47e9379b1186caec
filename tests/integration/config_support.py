"""Support for tests/integration/test_config_tier.py: stacks named lgcfg<hex>, snapshot surgery,
a small nginx project and TLS material made on the spot.

Everything listens on 127.0.0.1 (host networking); nothing here contacts another address.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets
import shutil
from pathlib import Path

try:
    from . import stacks
except ImportError:
    import stacks

PREFIX = "lgcfg"
NGINX_IMAGE = "lastgood-bench/debian:bookworm"


class ConfigStack(stacks.Stack):
    """A demo stack like stacks.Stack, but named lgcfg<hex> so its cleanup concerns this tier's tests only."""

    @classmethod
    def create(cls, parent, client, extra_env=None, up=True):
        project = f"{PREFIX}{secrets.token_hex(4)}"
        directory = Path(parent) / project
        shutil.copytree(stacks.DEMO_STACK_DIR, directory)
        ports = {service: stacks.free_port() for service in stacks.PORT_VARS}
        env = stacks._read_env_file(directory / ".env")  # pylint: disable=protected-access
        env.update({stacks.PORT_VARS[service]: str(port) for service, port in ports.items()})
        env["APP_IMAGE"] = f"{stacks.APP_REPO}:{project}"
        env.update({k: str(v) for k, v in (extra_env or {}).items()})
        stacks._write_env_file(directory / ".env", env)  # pylint: disable=protected-access
        stack = cls(directory, ports, env, client)
        stack.tag_app(stacks.APP_V1)
        try:
            stack._git_init()  # pylint: disable=protected-access
            if up:
                stack.up()
        except BaseException:
            stack.destroy()
            raise
        return stack

    def set_env(self, **values):
        """Rewrite .env with changed values (the way a bad deploy edits it); keeps its mode."""
        self.env.update({k: str(v) for k, v in values.items()})
        stacks._write_env_file(self.dir / ".env", self.env)  # pylint: disable=protected-access


def copy_snapshot(backup_root, project, source_id, new_id):
    """A copy of a snapshot under a new id, to damage without touching the original."""
    root = Path(backup_root) / project
    shutil.copytree(root / source_id, root / new_id)
    manifest = json.loads((root / new_id / "manifest.json").read_text())
    manifest["id"] = new_id
    write_manifest(root / new_id, manifest)
    return root / new_id, manifest


def write_manifest(snapshot_dir, manifest):
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (Path(snapshot_dir) / "manifest.json").write_bytes(data)
    (Path(snapshot_dir) / "manifest.json.sha256").write_text("%s  manifest.json\n" % hashlib.sha256(data).hexdigest())


def replace_snapshot_file(snapshot_dir, rel, content, fix_checksum=True):
    """Put `content` in the snapshot's copy of `rel`; with fix_checksum the manifest agrees (a
    snapshot that verifies but holds this content), without it the copy is damaged."""
    snapshot_dir = Path(snapshot_dir)
    copy = snapshot_dir / "files" / rel
    copy.write_bytes(content if isinstance(content, bytes) else content.encode())
    if fix_checksum:
        manifest = json.loads((snapshot_dir / "manifest.json").read_text())
        manifest["files"][rel]["sha256"] = hashlib.sha256(copy.read_bytes()).hexdigest()
        manifest["files"][rel]["size"] = copy.stat().st_size
        write_manifest(snapshot_dir, manifest)


# -- a small nginx project ------------------------------------------------------------------------

NGINX_COMPOSE = """\
services:
  web:
    image: %(image)s
    network_mode: host
    command: ["nginx", "-g", "daemon off;"]
    volumes:
      - ./nginx/nginx.conf:/etc/nginx/nginx.conf:ro
      - ./certs:/etc/lastgood-certs:ro
    stop_grace_period: 2s
"""

NGINX_CONF = """\
worker_processes 1;
error_log stderr;
pid /tmp/nginx-lgcfg.pid;
events { worker_connections 64; }
http {
  access_log off;
  server {
    listen 127.0.0.1:%(port)d;
    location / { return 200 "%(answer)s\\n"; }
  }
}
"""


def nginx_conf(port, answer="ok"):
    return NGINX_CONF % {"port": port, "answer": answer}


def create_nginx_project(parent, port):
    project = f"{PREFIX}{secrets.token_hex(4)}"
    directory = Path(parent) / project
    (directory / "nginx").mkdir(parents=True)
    (directory / "certs").mkdir()
    (directory / "compose.yaml").write_text(NGINX_COMPOSE % {"image": NGINX_IMAGE})
    (directory / "nginx" / "nginx.conf").write_text(nginx_conf(port))
    cert, key = certificate_pair()
    (directory / "certs" / "site.crt").write_bytes(cert)
    (directory / "certs" / "site.key").write_bytes(key)
    (directory / "certs" / "site.key").chmod(0o600)
    return directory


def certificate_pair(name="lgcfg.test"):
    """A self-signed certificate and its key (PEM), made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def other_key():
    """A private key that belongs to no certificate of the project (PEM)."""
    return certificate_pair("other.lgcfg.test")[1]
