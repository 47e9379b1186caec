# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tier 1: putting a snapshot's configuration files back.

The order never changes: verify every snapshot copy (sha256) -> stage the files in a private
temporary directory (and check the staged copies again) -> validate the staged set (compose
config, nginx -t, TLS pairs) -> keep the files being replaced in the snapshot's rollback record
-> rename each file into place -> recreate only the services whose effective configuration
(the compose config hash) differs from what their containers were created with.

Values of env files never leave this module: the diff and the result name changed keys only.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import stat
import tempfile

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import read_env_file, recorded_paths
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    FILES_DIR,
    LAST_KNOWN_GOOD,
    MANIFEST,
    ManifestError,
    check_safe_name,
    compact_timestamp,
    isoformat,
    load_manifest,
    sha256_file,
    write_atomic,
)

ROLLBACKS_DIR = "rollbacks"
RECORD = "record.json"
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
# Larger files, binary files and anything holding a private key are summarised by checksum.
DIFF_MAX_BYTES = 16 * 1024
MASK = "********"


class ConfigError(StepError):
    """A refused or failed configuration restore; `msg` is one line."""


# -- what to restore ----------------------------------------------------------------------------

def safe_relative(rel):
    """A manifest path must stay inside the project directory."""
    if not rel or os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == os.pardir:
        raise ConfigError("snapshot file %r is not a path inside the project directory" % rel)
    return os.path.normpath(rel)


def select_files(manifest, wanted=None):
    """{rel: manifest entry} of the files to restore; unknown names in `wanted` are refused."""
    recorded = manifest.get("files") or {}
    if not recorded:
        raise ConfigError("snapshot %s records no configuration files" % manifest.get("id"))
    if wanted:
        unknown = sorted(set(wanted) - set(recorded))
        if unknown:
            raise ConfigError("files names files the snapshot does not record: %s (it has %s)"
                              % (", ".join(unknown), ", ".join(sorted(recorded))))
        recorded = {rel: recorded[rel] for rel in wanted}
    return {safe_relative(rel): meta for rel, meta in sorted(recorded.items())}


def file_mode(meta):
    try:
        return int(str(meta.get("mode") or "0640"), 8)
    except ValueError:
        return 0o640


def current_state(project_dir, rel):
    """sha256/size/mode of the live file, or None when it does not exist."""
    path = os.path.join(project_dir, rel)
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        raise ConfigError("%s in the project is not a regular file; it is left for a person to look at" % rel)
    if not os.path.exists(path):
        return None
    info = os.stat(path)
    return {"sha256": sha256_file(path), "size": info.st_size, "mode": "%04o" % stat.S_IMODE(info.st_mode)}


def stage(snapshot_dir, selected, staging):
    """Copy the snapshot's files into `staging` and prove each copy against the manifest."""
    damaged = []
    for rel, meta in selected.items():
        source = os.path.join(snapshot_dir, FILES_DIR, rel)
        target = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        try:
            shutil.copyfile(source, target)
        except OSError:
            damaged.append(rel)
            continue
        os.chmod(target, 0o600)
        if sha256_file(target) != meta.get("sha256"):
            damaged.append(rel)
    if damaged:
        raise ConfigError("nothing changed: snapshot file copies do not match their sha256: %s" % ", ".join(damaged))


def overlay(project_dir, staging, selected, others):
    """Put the live version of the project's other recorded files beside the staged ones, so a
    validation of the staged set sees the project as it will be."""
    for rel in others:
        if rel in selected:
            continue
        source = os.path.join(project_dir, rel)
        if os.path.isfile(source):
            target = os.path.join(staging, rel)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            shutil.copyfile(source, target)
            os.chmod(target, 0o600)


# -- env files: keys, never values ----------------------------------------------------------

def is_env_file(rel, env_files=()):
    base = os.path.basename(rel)
    return base == ".env" or base.endswith(".env") or base.startswith(".env.") or rel in env_files


def changed_keys(before_path, after_path):
    before = read_env_file(before_path) if before_path and os.path.isfile(before_path) else {}
    after = read_env_file(after_path) if after_path and os.path.isfile(after_path) else {}
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


def _text(path):
    """The file's text when it is small, valid UTF-8 and holds no private key; else None."""
    try:
        if os.path.getsize(path) > DIFF_MAX_BYTES:
            return None
        with open(path, "rb") as handle:
            data = handle.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if "\x00" in text or "PRIVATE KEY" in text:
        return None
    return text


def file_diff(rel, live_path, staged_path, live, meta, env_files=(), secret_files=()):
    """One Ansible diff entry; env files show changed keys with masked values only."""
    entry = {"before_header": "%s (live)" % rel, "after_header": "%s (snapshot)" % rel}
    if is_env_file(rel, env_files):
        keys = changed_keys(live_path if live else None, staged_path)
        before_env = read_env_file(live_path) if live else {}
        after_env = read_env_file(staged_path)
        entry["before"] = "".join("%s=%s\n" % (k, MASK) for k in keys if k in before_env)
        entry["after"] = "".join("%s=%s\n" % (k, MASK) for k in keys if k in after_env)
        # Masked values look alike: say which keys differ so the diff never looks empty.
        entry["before"] = "# values masked; keys that differ: %s\n%s" % (", ".join(keys) or "none", entry["before"])
        entry["after"] = "# values masked; keys that differ: %s\n%s" % (", ".join(keys) or "none", entry["after"])
        return entry
    before = _text(live_path) if live and rel not in secret_files else None
    after = _text(staged_path) if rel not in secret_files else None
    if (live and before is None) or after is None:
        entry["before"] = "sha256 %s, mode %s\n" % (live["sha256"], live["mode"]) if live else ""
        entry["after"] = "sha256 %s, mode %s\n" % (meta.get("sha256"), meta.get("mode"))
    else:
        entry["before"] = before or ""
        entry["after"] = after
    return entry


# -- the rollback record ------------------------------------------------------------------------

def new_record_dir(snapshot_dir, moment):
    base = os.path.join(snapshot_dir, ROLLBACKS_DIR)
    stamp = compact_timestamp(moment)
    candidate, counter = stamp, 1
    while os.path.lexists(os.path.join(base, candidate)):
        counter += 1
        candidate = "%s-%d" % (stamp, counter)
    return os.path.join(base, candidate)


def write_record(record_dir, project_dir, plan, snapshot_id, project_name, moment):
    """Copy every live file about to be replaced into the record, with its sha256, and prove the copies."""
    files_dir = os.path.join(record_dir, FILES_DIR)
    os.makedirs(files_dir, mode=0o700)
    kept = {}
    for rel, step in sorted(plan.items()):
        if not step["changes"]:
            continue
        live = step["live"]
        if live is None:
            kept[rel] = {"absent": True, "restored_sha256": step["sha256"]}
            continue
        target = os.path.join(files_dir, rel)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        shutil.copy2(os.path.join(project_dir, rel), target)
        if sha256_file(target) != live["sha256"]:
            raise ConfigError("nothing changed: %s changed while it was being kept in the rollback record" % rel)
        kept[rel] = dict(live, restored_sha256=step["sha256"])
    document = {
        "created_at": isoformat(moment),
        "snapshot_id": snapshot_id,
        "project": project_name,
        "project_dir": project_dir,
        "files": kept,
    }
    with open(os.path.join(record_dir, RECORD), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return document


def install(project_dir, staging, rel, mode):
    """Rename the staged file into place (a temporary file in the target directory first)."""
    target = os.path.join(project_dir, rel)
    os.makedirs(os.path.dirname(target), mode=0o750, exist_ok=True)
    with open(os.path.join(staging, rel), "rb") as source:
        write_atomic(target, source.read(), mode, prefix=".lastgood-restore-")


# -- project name without a working compose file -----------------------------------------------

def project_name_from_snapshots(backup_root, project_dir):
    """The project whose last-known-good snapshot was taken in `project_dir` (the live compose
    file may be the broken thing a configuration rollback repairs, so compose cannot say)."""
    wanted = os.path.realpath(project_dir)
    found = []
    try:
        names = sorted(os.listdir(backup_root))
    except OSError:
        return None
    for name in names:
        try:
            check_safe_name(name, "project name")
        except ManifestError:
            continue
        link = os.path.join(backup_root, name, LAST_KNOWN_GOOD)
        if not os.path.islink(link) or not os.path.isfile(os.path.join(link, MANIFEST)):
            continue
        try:
            manifest = load_manifest(os.path.realpath(link))
        except ManifestError:
            continue
        recorded = (manifest.get("project") or {}).get("dir")
        if recorded and os.path.realpath(recorded) == wanted:
            found.append(name)
    return found[0] if len(found) == 1 else None


# -- compose: the staged configuration and the hashes -------------------------------------------

def parse_hashes(text):
    hashes = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            hashes[parts[0]] = parts[1]
    return hashes


def live_config_hashes(client, project_name):
    """{service: sorted config hash labels of its containers} and {service: [container ids]}."""
    filters = {"label": ["com.docker.compose.project=%s" % project_name]}
    hashes, ids = {}, {}
    for item in client.api.containers(all=True, filters=filters):
        labels = item.get("Labels") or {}
        if labels.get("com.docker.compose.oneoff") == "True":
            continue
        service = labels.get("com.docker.compose.service")
        hashes.setdefault(service, set()).add(labels.get(CONFIG_HASH_LABEL) or "")
        ids.setdefault(service, []).append(item["Id"])
    return {name: sorted(values) for name, values in hashes.items()}, ids


def services_to_recreate(accepted, live_hashes, recorded_running=()):
    """Services whose containers were created from another configuration (`accepted`: per service
    the hashes a container made from this configuration carries); services without a container
    that the snapshot recorded as running are created."""
    changed = []
    for service, wanted in sorted(accepted.items()):
        have = live_hashes.get(service)
        if have is None:
            if service in recorded_running:
                changed.append(service)
        elif not set(have) <= set(wanted):
            changed.append(service)
    return changed


def escape_dollars(value):
    """A resolved compose model fed back to compose must not be interpolated a second time."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [escape_dollars(item) for item in value]
    if isinstance(value, dict):
        return {key: escape_dollars(item) for key, item in value.items()}
    return value


def without_dependencies(config):
    """The model as `docker compose up --no-deps` hashes it: compose 2.x drops depends_on then, so
    a container created that way carries the hash of its service without depends_on."""
    model = escape_dollars(config)
    for spec in (model.get("services") or {}).values():
        spec.pop("depends_on", None)
    return model


# -- validators ---------------------------------------------------------------------------------

def tls_pair_problem(cert_path, key_path):
    """None when the certificate's public key belongs to the private key; else why not."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        with open(cert_path, "rb") as handle:
            cert_data = handle.read()
        with open(key_path, "rb") as handle:
            key_data = handle.read()
    except OSError as exc:
        return "cannot read %s" % exc.filename
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        try:
            cert = x509.load_der_x509_certificate(cert_data)
        except ValueError:
            return "the certificate is not PEM or DER X.509"
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError):
        try:
            key = serialization.load_der_private_key(key_data, password=None)
        except (ValueError, TypeError):
            return "the key is not an unencrypted PEM or DER private key"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if cert.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(encoding, public):
        return "the certificate does not belong to the key"
    return None


def nginx_mounts(service_spec, project_dir, staging, restored):
    """`-v` arguments that mount what the service mounts, with the restored files taken from
    `staging`: a restored file replaces its live copy, also inside a mounted directory."""
    args = []
    for volume in service_spec.get("volumes") or []:
        if not isinstance(volume, dict) or volume.get("type") != "bind":
            continue
        source, target = volume.get("source"), volume.get("target")
        if not source or not target:
            continue
        rel = os.path.relpath(source, project_dir)
        inside = not rel.startswith(os.pardir)
        if inside and rel in restored:
            args += ["-v", "%s:%s:ro" % (os.path.join(staging, rel), target)]
            continue
        args += ["-v", "%s:%s:ro" % (source, target)]
        if inside:
            prefix = rel.rstrip(os.sep) + os.sep
            for name in sorted(restored):
                if name.startswith(prefix) or rel == os.curdir:
                    sub = name[len(prefix):] if rel != os.curdir else name
                    args += ["-v", "%s:%s:ro" % (os.path.join(staging, name), target.rstrip("/") + "/" + sub)]
    return args


# -- the whole restore ----------------------------------------------------------------------------

def matches(rel, patterns):
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in patterns)


def choose_files(manifest, patterns):
    """The recorded files a restore covers: all of them, or those matching `patterns` plus the
    snapshot's compose files and .env, which are always restored together with them."""
    recorded = manifest.get("files") or {}
    if not patterns:
        return None
    always = set((manifest.get("project") or {}).get("compose_files") or []) | {".env"}
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(rel, p) for rel in recorded)]
    if unmatched:
        raise ConfigError("nothing changed: config_files %s match no file of snapshot %s (it records %s)"
                          % (", ".join(unmatched), manifest.get("id"), ", ".join(sorted(recorded)) or "none"))
    return sorted(rel for rel in recorded if rel in always or matches(rel, patterns))


class ConfigRestore:
    """Plan, validate and apply the restore of one snapshot's configuration files."""

    def __init__(self, module, client, project_dir, compose_files, project_name, snapshot_id, snapshot_dir, manifest):
        self.module = module
        self.client = client
        self.project_dir = os.path.realpath(project_dir)
        self.project_name = project_name
        self.snapshot_id = snapshot_id
        self.snapshot_dir = snapshot_dir
        self.manifest = manifest
        self.compose_files = self.files_to_use(compose_files)
        self.docker = module.get_bin_path("docker", required=True)
        self.staging = None
        self.selected = {}
        self.plan = {}
        self.staged_config = {}
        self.staged_hashes = {}
        self.actions = []

    def files_to_use(self, named):
        """The compose files to validate and start with, each by the path its content is recorded
        under (a link by what it links to): those named, else the snapshot's. Of the snapshot's, an
        override file neither recorded (it linked outside the project) nor on the host now is left
        out, as compose itself would leave it out."""
        if named:
            return recorded_paths(self.project_dir, named)
        recorded = self.manifest.get("files") or {}
        files = []
        for name in (self.manifest.get("project") or {}).get("compose_files") or []:
            if name in recorded or os.path.isfile(os.path.join(self.project_dir, name)):
                files.append(name)
            else:
                self.module.warn("compose file %s is neither recorded in snapshot %s nor on the host: left out, as"
                                 " compose would leave it out" % (name, self.snapshot_id))
        return files

    # -- planning ----------------------------------------------------------------------------
    def prepare(self, patterns):
        wanted = choose_files(self.manifest, patterns)
        self.selected = select_files(self.manifest, wanted)
        self.staging = tempfile.mkdtemp(prefix="lastgood-config-")
        os.chmod(self.staging, 0o700)
        stage(self.snapshot_dir, self.selected, self.staging)
        others = set(self.manifest.get("files") or {}) | set(self.compose_files) | {".env"}
        overlay(self.project_dir, self.staging, self.selected, sorted(others))
        for rel, meta in self.selected.items():
            live = current_state(self.project_dir, rel)
            content = live is None or live["sha256"] != meta.get("sha256")
            mode = "%04o" % file_mode(meta)
            mode_changes = live is not None and live["mode"] != mode
            if live is None:
                action = "create"
            elif content:
                action = "restore"
            else:
                action = "chmod" if mode_changes else "unchanged"
            self.plan[rel] = {
                "live": live,
                "sha256": meta.get("sha256"),
                "mode": mode,
                "content_changes": content,
                "changes": content or mode_changes,
                "action": action,
            }

    def cleanup(self):
        if self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def compose_base(self, staged):
        cmd = [self.docker, "compose", "--project-directory", self.project_dir]
        root = self.staging if staged else self.project_dir
        for name in self.compose_files:
            cmd += ["-f", os.path.join(root, name)]
        if staged:
            env_file = os.path.join(self.staging, ".env")
            if os.path.isfile(env_file):
                cmd += ["--env-file", env_file]
        return cmd + ["-p", self.project_name]

    def compose(self, staged, args, what):
        cmd = self.compose_base(staged) + list(args)
        rc, out, err = self.module.run_command(cmd, cwd=self.project_dir)
        if rc != 0:
            raise ConfigError(what % last_line(err or out), cmd=cmd, rc=rc, stderr=err)
        return out

    def validate_compose(self, strict=True):
        """`docker compose config` of the staged set: the model and the per-service hashes."""
        what = "nothing changed: docker compose config rejects the snapshot's configuration: %s"
        try:
            self.staged_config = json.loads(self.compose(True, ["config", "--format", "json"], what))
            self.staged_hashes = parse_hashes(self.compose(True, ["config", "--hash", "*"], what))
        except ConfigError:
            if strict:
                raise
            self.module.warn("validate=false: the staged compose configuration does not resolve; "
                             "the services to recreate are decided after the files are in place")
            self.staged_config, self.staged_hashes = {}, {}
            return False
        self.actions.append("validated the compose configuration (docker compose config)")
        return True

    def validate_tls(self, pairs):
        for pair in pairs:
            cert, key = safe_relative(pair["cert"]), safe_relative(pair["key"])
            if not any(rel in self.selected for rel in (cert, key)):
                continue
            problem = tls_pair_problem(self.path_of(cert), self.path_of(key))
            if problem:
                raise ConfigError("nothing changed: TLS pair %s / %s of the restored configuration: %s" % (cert, key, problem))
            self.actions.append("validated TLS pair %s / %s (the certificate matches the key)" % (cert, key))

    def path_of(self, rel):
        staged = os.path.join(self.staging, rel)
        return staged if rel in self.selected or os.path.isfile(staged) else os.path.join(self.project_dir, rel)

    def validate_nginx(self, services):
        known = (self.staged_config.get("services") or {})
        for name in services:
            if name not in known:
                raise ConfigError("nothing changed: nginx service %s is not a service of the restored configuration" % name)
            spec = known[name]
            image = spec.get("image") or "%s-%s" % (self.project_name, name)
            network = "host" if spec.get("network_mode") == "host" else "none"
            restored = [rel for rel in self.selected if os.path.isfile(os.path.join(self.staging, rel))]
            cmd = [self.docker, "run", "--rm", "--pull", "never", "--network", network, "--entrypoint", "nginx",
                   "--label", "lastgood.rollback.validator=nginx"]
            cmd += nginx_mounts(spec, self.project_dir, self.staging, restored)
            cmd += [image, "-t"]
            rc, out, err = self.module.run_command(cmd, cwd=self.project_dir)
            if rc != 0:
                raise ConfigError("nothing changed: nginx -t in service %s rejects the restored configuration: %s"
                                  % (name, nginx_error(err or out)), cmd=cmd, rc=rc, stderr=err)
            self.actions.append("validated nginx configuration of %s (nginx -t in a throwaway container)" % name)

    def accepted_hashes(self, hashes, config):
        """Per service the config hashes its containers may carry: compose's own, and the one a
        container created with --no-deps carries (see without_dependencies)."""
        accepted = {name: {value} for name, value in hashes.items()}
        if any((spec or {}).get("depends_on") for spec in (config.get("services") or {}).values()):
            fd, path = tempfile.mkstemp(dir=self.staging, prefix=".nodeps-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(without_dependencies(config), handle)
            cmd = [self.docker, "compose", "--project-directory", self.project_dir, "-f", path, "-p", self.project_name,
                   "config", "--hash", "*"]
            rc, out, err = self.module.run_command(cmd, cwd=self.project_dir)
            os.unlink(path)
            if rc != 0:
                raise ConfigError("docker compose config --hash of the model without depends_on failed: %s" % last_line(err),
                                  cmd=cmd, rc=rc, stderr=err)
            for name, value in parse_hashes(out).items():
                accepted.setdefault(name, set()).add(value)
        return accepted

    def services_plan(self, hashes, config, remove_orphans):
        live, ids = live_config_hashes(self.client, self.project_name)
        recorded = self.manifest.get("services") or {}
        running = [name for name, entry in recorded.items() if isinstance(entry, dict) and entry.get("running")]
        recreate = services_to_recreate(self.accepted_hashes(hashes, config), live, running) if hashes else []
        orphans = sorted(name for name in live if name and hashes and name not in hashes) if remove_orphans else []
        return recreate, orphans, ids

    # -- applying --------------------------------------------------------------------------------
    def changing(self):
        return sorted(rel for rel, step in self.plan.items() if step["changes"])

    def keep_and_install(self, moment):
        """Record, then put every changing file in place; returns the record directory."""
        changing = self.changing()
        if not changing:
            return None
        record_dir = new_record_dir(self.snapshot_dir, moment)
        try:
            write_record(record_dir, self.project_dir, self.plan, self.snapshot_id, self.project_name, moment)
        except (OSError, ConfigError) as exc:
            shutil.rmtree(record_dir, ignore_errors=True)
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError("nothing changed: cannot keep the live files in the rollback record %s: %s"
                              % (record_dir, exc.strerror or exc))
        done = []
        for rel in changing:
            step = self.plan[rel]
            try:
                if step["content_changes"]:
                    install(self.project_dir, self.staging, rel, int(step["mode"], 8))
                else:
                    os.chmod(os.path.join(self.project_dir, rel), int(step["mode"], 8))
            except OSError as exc:
                raise ConfigError("restoring %s failed after %s were restored: %s; the replaced files are kept in %s"
                                  % (rel, ", ".join(done) or "no file", exc.strerror or exc, record_dir),
                                  files_restored=done, record_dir=record_dir)
            done.append(rel)
        return record_dir

    def remove_containers(self, ids, stop_timeout):
        from ansible_collections.lastgood.rollback.plugins.module_utils._docker import APIError, NotFound
        for container in ids:
            try:
                self.client.api.stop(container, timeout=stop_timeout)
                self.client.api.remove_container(container, v=False)
            except NotFound:
                continue
            except APIError as exc:
                raise ConfigError("removing orphan container %s failed: %s" % (container[:12], exc))


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def nginx_error(text):
    """The [emerg] line nginx -t prints, else its last line."""
    for line in (text or "").splitlines():
        if "[emerg]" in line or "[crit]" in line:
            return line.strip()
    return last_line(text)


def services_mounting(config, project_dir, changed):
    """Services that bind-mount a changed file (or a directory holding one): the file is read at
    start, and a single-file bind mount keeps the replaced inode, so only a new container sees it."""
    found = []
    for service, spec in sorted((config.get("services") or {}).items()):
        for volume in spec.get("volumes") or []:
            if not isinstance(volume, dict) or volume.get("type") != "bind" or not volume.get("source"):
                continue
            rel = os.path.relpath(os.path.realpath(volume["source"]), project_dir)
            if rel.startswith(os.pardir):
                continue
            if any(rel == os.curdir or name == rel or name.startswith(rel.rstrip(os.sep) + os.sep) for name in changed):
                found.append(service)
                break
    return found
