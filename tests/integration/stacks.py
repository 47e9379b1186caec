"""Disposable copies of the demo stack (demo/stack) for integration tests.

Each Stack is a copy of demo/stack in its own directory named ``lgt<hex>``, which is also
its compose project name, with its own .env: free ports above 20000 on 127.0.0.1, and its
own app image reference ``lastgood-demo/app:<project>`` (tagged from v1), because moving the
engine-wide ``lastgood-demo/app:latest`` would disturb every other stack. The directory is a
git work tree of its own, like a deployment checkout.

Every server listens on 127.0.0.1 (host networking); nothing here contacts another address.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_STACK_DIR = REPO_ROOT / "demo" / "stack"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-images.sh"

APP_REPO = "lastgood-demo/app"
APP_V1 = f"{APP_REPO}:v1"
APP_V2 = f"{APP_REPO}:v2"
POSTGRES_PASSWORD = "demo-only-password"

# Service -> the .env variable holding its port.
PORT_VARS = {"app": "APP_PORT", "db": "PG_PORT", "static": "STATIC_PORT"}
HTTP_SERVICES = ("app", "static")

# Variables that, set in the caller's environment, would override the stack's own .env or
# project name (compose gives the shell environment precedence over .env).
_OVERRIDING_VARS = {
    "APP_IMAGE",
    "APP_ERROR_RATE",
    "APP_EXTRA_LATENCY_MS",
    "APP_STARTUP_DELAY_MS",
    "POSTGRES_DB",
    "POSTGRES_PASSWORD",
    *PORT_VARS.values(),
}

_MIN_PORT = 20000
_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the command's output."""

    def __str__(self):
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run(args, *, cwd=None, env=None, check=True, timeout=300):
    """Run a command from an argument list (never a shell), capturing text output."""
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def free_port() -> int:
    """A TCP port above 20000 that is free on 127.0.0.1 and not handed out before.

    The kernel picks it (bind to port 0); ports already given to another stack of this
    session are skipped, since a stack whose service is stopped leaves its port free.
    """
    with _ports_lock:
        for _attempt in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port > _MIN_PORT and port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError("no free port above 20000 found on 127.0.0.1")


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    """Poll predicate() until it returns a truthy value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message}: not reached within {timeout} s")
        time.sleep(interval)


class Watch:
    """Calls self.look() every `interval` seconds in a thread while a `with` block runs (and
    once more as it ends): the base of the tests' observers of /proc, lock files and the like."""

    interval = 0.002

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def look(self):
        raise NotImplementedError

    def _run(self):
        while True:
            self.look()
            if self._stop.wait(self.interval):
                self.look()
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def http_get(url: str, timeout: float = 2.0):
    """GET url; returns (status, body text); HTTP error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def docker_client() -> docker.DockerClient:
    return docker.from_env(timeout=60)


def clean_env() -> dict:
    """The caller's environment without variables that would override a stack's settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COMPOSE_") and k not in _OVERRIDING_VARS
    }


class Stack:
    """One running copy of the demo stack. Create it with Stack.create()."""

    def __init__(self, directory: Path, ports: dict, env: dict, client: docker.DockerClient):
        self.dir = directory
        self.project = directory.name
        self.ports = ports
        self.env = env  # the .env settings
        self.app_image = env["APP_IMAGE"]
        self.password = env["POSTGRES_PASSWORD"]
        self._client = client

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, parent: Path, client: docker.DockerClient, extra_env=None, up=True):
        """Copy demo/stack into parent/lgt<hex>, give it ports and an app tag, git-commit it
        and (unless up=False) start it with `docker compose up -d --wait`."""
        project = f"lgt{secrets.token_hex(4)}"
        directory = parent / project
        shutil.copytree(DEMO_STACK_DIR, directory)
        ports = {service: free_port() for service in PORT_VARS}
        env = _read_env_file(directory / ".env")
        env.update({PORT_VARS[service]: str(port) for service, port in ports.items()})
        env["APP_IMAGE"] = f"{APP_REPO}:{project}"
        env.update({k: str(v) for k, v in (extra_env or {}).items()})
        _write_env_file(directory / ".env", env)

        stack = cls(directory, ports, env, client)
        stack.tag_app(APP_V1)
        try:
            stack._git_init()
            if up:
                stack.up()
        except BaseException:
            stack.destroy()
            raise
        return stack

    def up(self, timeout: int = 60):
        """`docker compose up -d --wait`; on failure the error shows the services' logs."""
        try:
            return self.compose("up", "-d", "--wait", "--wait-timeout", str(timeout), timeout=timeout + 60)
        except CommandError as err:
            logs = self.compose("logs", "--no-color", "--tail", "50", check=False).stdout
            ps = self.compose("ps", "--all", check=False).stdout
            raise CommandError(err.returncode, err.cmd, err.stdout, f"{err.stderr}\n{ps}\n{logs}") from None

    def destroy(self):
        """Remove the stack's containers and volumes, then its app image tag.

        The tag is removed even when `down` fails; the failure is raised afterwards.
        """
        down = self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False, timeout=120)
        try:
            # Only the tag goes: the image keeps its v1/v2 names.
            self._client.images.remove(self.app_image, noprune=True)
        except docker.errors.ImageNotFound:
            pass
        if down.returncode != 0:
            raise CommandError(down.returncode, down.args, down.stdout, down.stderr)

    def _git_init(self):
        git = ["git", "-C", self.dir]
        run([*git, "init", "-q", "-b", "main"])
        run([*git, "config", "user.email", "tests@lastgood.invalid"])
        run([*git, "config", "user.name", "lastgood tests"])
        run([*git, "config", "commit.gpgsign", "false"])
        run([*git, "add", "-A"])
        run([*git, "commit", "-q", "-m", f"demo stack {self.project}"])

    # -- helpers ---------------------------------------------------------------------------

    def compose(self, *args, check: bool = True, timeout: float = 180):
        """Run `docker compose <args>` in the stack's directory (argument list, no shell)."""
        return run(["docker", "compose", *args], cwd=self.dir, env=clean_env(), check=check, timeout=timeout)

    def tag_app(self, source: str):
        """Point this stack's app image reference at source (e.g. APP_V2); the running
        container is untouched until `compose up`."""
        repo, tag = self.app_image.rsplit(":", 1)
        self._client.images.get(source).tag(repo, tag)

    def container(self, service: str):
        """The service's container (docker SDK object, freshly loaded)."""
        found = self._client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                    "com.docker.compose.oneoff=False",
                ]
            },
        )
        if not found:
            raise LookupError(f"{self.project}: no container for service {service}")
        # After a recreation, the newest one is the service's container.
        return max(found, key=lambda c: c.attrs["Created"])

    def container_id(self, service: str) -> str:
        return self.container(service).id

    def image_id(self, service: str) -> str:
        """ID (sha256:...) of the image the service's container runs."""
        return self.container(service).attrs["Image"]

    def health(self, service: str) -> str | None:
        """Health status of the service's container: starting, healthy, unhealthy or None."""
        state = self.container(service).attrs["State"]
        return (state.get("Health") or {}).get("Status")

    def wait_health(self, service: str, status: str, timeout: float = 30) -> None:
        wait_until(
            lambda: self.health(service) == status,
            timeout,
            interval=0.2,
            message=f"{self.project}/{service} health {status!r} (now {self.health(service)!r})",
        )

    def db_connect(self, **extra) -> dict:
        """psycopg2.connect keyword arguments for the stack's PostgreSQL as its superuser."""
        return dict(host="127.0.0.1", port=self.ports["db"], user="postgres", password=self.password, **extra)

    def url(self, service: str, path: str = "/") -> str:
        if service not in HTTP_SERVICES:
            raise ValueError(f"{service} is not an HTTP service")
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def get(self, service: str, path: str = "/", timeout: float = 2.0):
        """(status, body) of GET url(service, path)."""
        return http_get(self.url(service, path), timeout=timeout)

    def get_json(self, service: str, path: str):
        status, body = self.get(service, path)
        return status, json.loads(body)

    def __repr__(self):
        return f"Stack({self.project!r}, ports={self.ports})"


def _read_env_file(path: Path) -> dict:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env


def _write_env_file(path: Path, env: dict) -> None:
    lines = ["# Written by tests/integration/stacks.py for this test stack."]
    lines += [f"{key}={value}" for key, value in env.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # it holds the database password
