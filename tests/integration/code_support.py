"""A small compose project that is a git work tree, for the code tier (tier 3) tests and bench.

    repo = CodeRepo.create(parent, client)      # lgcode<hex>/: compose.yaml, web/ (built from source)
    good = repo.head()
    repo.commit_bad()                           # web/www/health gone: the service turns unhealthy
    repo.up()                                   # build (classic builder) + up -d --wait
    repo.destroy()

Two services, both with host networking on 127.0.0.1: ``web``, built from ``web/Dockerfile``
(FROM lastgood-bench/busybox:1, busybox httpd serving web/www, a healthcheck on /health), and
``side``, which runs lastgood-bench/busybox:1 as it is (not built from source). ``.env`` holds the
ports and is git-ignored, like a deployment's local settings.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

try:
    from . import stacks
except ImportError:
    import stacks

BASE_IMAGE = "lastgood-bench/busybox:1"

COMPOSE = """\
services:
  web:
    build:
      context: ./web
      args:
        NOTE: ${NOTE:-none}
    network_mode: host
    stop_signal: SIGKILL
    command: ["sh", "-c", "exec httpd -f -p 127.0.0.1:${WEB_PORT} -h /www"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:${WEB_PORT}/health"]
      interval: 500ms
      timeout: 2s
      retries: 2
      start_period: 10s
  side:
    image: %s
    network_mode: host
    stop_signal: SIGKILL
    command: ["sh", "-c", "mkdir -p /w && echo side > /w/index.html && exec httpd -f -p 127.0.0.1:${SIDE_PORT} -h /w"]
""" % BASE_IMAGE

# The label lets destroy() find every image this project built, also those no tag names any more.
# The note label is the build arg NOTE (from .env): what a build read.
DOCKERFILE = """\
FROM %s
LABEL lastgood.test.project={project}
ARG NOTE=none
LABEL lastgood.test.note=$NOTE
COPY www /www
""" % BASE_IMAGE


class CodeRepo:
    def __init__(self, directory: Path, client, ports):
        self.dir = directory
        self.project = directory.name
        self.client = client
        self.ports = ports
        self.image_ids = set()  # every image this repo built, removed by destroy()

    @classmethod
    def create(cls, parent: Path, client, version="good", up=True, ignore_env=True):
        """ignore_env=False: the .env is neither tracked nor ignored, as on hosts where nobody
        wrote a .gitignore (commit_all never adds it)."""
        project = "lgcode%s" % secrets.token_hex(4)
        directory = Path(parent) / project
        (directory / "web" / "www").mkdir(parents=True)
        ports = {"web": stacks.free_port(), "side": stacks.free_port()}
        (directory / "compose.yaml").write_text(COMPOSE)
        (directory / "web" / "Dockerfile").write_text(DOCKERFILE.format(project=project))
        (directory / "web" / "www" / "index.html").write_text("hello\n")
        (directory / "README").write_text("the code tier's test project\n")
        (directory / ".gitignore").write_text(".env\n" if ignore_env else "")
        (directory / ".env").write_text("WEB_PORT=%d\nSIDE_PORT=%d\n" % (ports["web"], ports["side"]))
        repo = cls(directory, client, ports)
        try:
            repo.git("init", "-q", "-b", "main")
            repo.git("config", "user.email", "tests@lastgood.invalid")
            repo.git("config", "user.name", "lastgood tests")
            repo.git("config", "commit.gpgsign", "false")
            repo.write_version(version)
            repo.commit_all("web %s" % version)
            if up:
                repo.up()
        except BaseException:
            repo.destroy()
            raise
        return repo

    # -- git ----------------------------------------------------------------------------
    def git(self, *args, check=True):
        return stacks.run(["git", "-C", self.dir, *args], check=check)

    def out(self, *args):
        return self.git(*args).stdout.strip()

    def head(self):
        return self.out("rev-parse", "HEAD")

    def branch(self):
        return self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip() or None

    def status(self):
        return self.out("status", "--porcelain=v1", "--untracked-files=all")

    def refs(self, prefix="refs/lastgood/"):
        """{ref: commit} under prefix."""
        lines = self.out("for-each-ref", "--format=%(refname) %(objectname)", prefix).splitlines()
        return dict(line.split(" ", 1) for line in lines if line)

    def tags(self, pattern="lastgood/good-*"):
        return sorted(self.out("tag", "--list", pattern).split())

    def stashes(self):
        """[(commit, subject)] newest first."""
        lines = self.out("stash", "list", "--format=%H %gs").splitlines()
        return [tuple(line.split(" ", 1)) for line in lines if line]

    def write_version(self, version, healthy=True):
        www = self.dir / "web" / "www"
        (www / "version").write_text(version + "\n")
        health = www / "health"
        if healthy:
            health.write_text("ok\n")
        elif health.exists():
            health.unlink()

    def commit_all(self, message):
        self.git("add", "-A")
        # The host's own settings, never committed: the .env and an override file compose adds.
        self.git("rm", "-q", "--cached", "--ignore-unmatch", "--", ".env", "compose.override.yaml")
        self.git("commit", "-q", "-m", message)
        return self.head()

    def commit_bad(self, version="bad"):
        """A release whose web service never turns healthy (no /health)."""
        self.write_version(version, healthy=False)
        return self.commit_all("web %s" % version)

    # -- compose --------------------------------------------------------------------------
    def compose(self, *args, check=True, timeout=300):
        env = dict(stacks.clean_env(), DOCKER_BUILDKIT="0")
        return stacks.run(["docker", "compose", *args], cwd=self.dir, env=env, check=check, timeout=timeout)

    def build(self):
        self.compose("build", "web")
        self.image_ids.add(self.image_of_reference())

    def up(self, wait=True):
        """Build web from the tree as it is and start both services (waiting for health unless told not to)."""
        self.build()
        args = ["up", "-d", "--no-build"]
        if wait:
            args += ["--wait", "--wait-timeout", "60"]
        self.compose(*args)

    def deploy(self, wait_healthy=False):
        """Build and recreate web from the tree (a release going out); does not wait for health."""
        self.build()
        self.compose("up", "-d", "--no-build", "--no-deps", "web")

    def reference(self):
        return "%s-web" % self.project

    def image_of_reference(self):
        return self.client.api.inspect_image(self.reference())["Id"]

    def build_note(self):
        """The build arg NOTE the web image was built with."""
        return self.client.api.inspect_image(self.reference())["Config"]["Labels"]["lastgood.test.note"]

    def container(self, service):
        found = self.client.containers.list(all=True, filters={"label": [
            "com.docker.compose.project=%s" % self.project, "com.docker.compose.service=%s" % service]})
        if not found:
            raise LookupError("%s: no container for %s" % (self.project, service))
        return max(found, key=lambda c: c.attrs["Created"])

    def containers(self):
        """{service: (container id, image id, started at)}."""
        return {s: (c.id, c.attrs["Image"], c.attrs["State"]["StartedAt"])
                for s in ("web", "side") for c in [self.container(s)]}

    def health(self, service="web"):
        return (self.container(service).attrs["State"].get("Health") or {}).get("Status")

    def url(self, service, path="/"):
        return "http://127.0.0.1:%d%s" % (self.ports[service], path)

    def get(self, service, path="/"):
        try:
            return stacks.http_get(self.url(service, path), timeout=1)
        except OSError:
            return None, ""

    def health_checks(self):
        return [
            {"name": "web-health", "url": self.url("web", "/health"), "status": [200], "timeout_s": 1},
            {"name": "side", "url": self.url("side", "/"), "status": [200], "timeout_s": 1},
        ]

    def host_vars(self, backup_root, **extra):
        host_vars = {"lastgood_project_dir": str(self.dir), "lastgood_backup_root": str(backup_root),
                     "lastgood_health_checks": self.health_checks()}
        host_vars.update(extra)
        return host_vars

    def destroy(self):
        """Containers, the images this repo built (every tag on them: pins too), the directory."""
        try:
            self.image_ids.add(self.image_of_reference())
        except Exception:  # noqa: BLE001 - never built
            pass
        down = self.compose("down", "--remove-orphans", "--timeout", "1", check=False)
        labelled = self.client.images.list(filters={"label": "lastgood.test.project=%s" % self.project})
        self.image_ids.update(image.id for image in labelled)
        for image in self.image_ids:
            try:
                self.client.images.remove(image, force=True)
            except Exception:  # noqa: BLE001 - gone already
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        if down.returncode != 0:
            raise stacks.CommandError(down.returncode, down.args, down.stdout, down.stderr)

    def __repr__(self):
        return "CodeRepo(%r, %s)" % (self.project, json.dumps(self.ports))
