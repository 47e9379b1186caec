"""Disposable copies of the blue-green demo (demo/bluegreen) for tests and the bench.

A BlueGreenStack is a copy of demo/bluegreen in its own directory ``lgbg<hex>`` (also its
compose project name) with free ports on 127.0.0.1 in its .env and an upstream file naming
blue, the live color at the start. Blue and green run the demo app v1 with the versions
``blue`` and ``green`` (GET /version tells which color answered); ``green_broken=True`` makes
green's /health answer 500 (its process still runs, so the stack starts).
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
from pathlib import Path

try:
    from . import stacks
except ImportError:
    import stacks

DEMO_DIR = stacks.REPO_ROOT / "demo" / "bluegreen"
UPSTREAM_FILE = "upstream/upstream.conf"
MARKER_FILE = ".lastgood-color"
COLORS = ("blue", "green")
PORT_VARS = {"nginx": "NGINX_PORT", "blue": "BLUE_PORT", "green": "GREEN_PORT"}


def load_prober():
    """bench/prober.py's Prober (one fixed-rate prober for the tests and the bench)."""
    spec = importlib.util.spec_from_file_location("lastgood_bench_prober", stacks.REPO_ROOT / "bench" / "prober.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Prober


def upstream_text(color, port):
    """The upstream file as nginx_upstream writes it for `color`."""
    return ("# Managed by lastgood.rollback.nginx_upstream: live color %s.\n"
            "upstream app {\n    server 127.0.0.1:%d;\n}\n" % (color, port))


class BlueGreenStack:
    def __init__(self, directory: Path, ports: dict, client):
        self.dir = directory
        self.project = directory.name
        self.ports = ports
        self._client = client

    @classmethod
    def create(cls, parent: Path, client, green_broken=False, ports=None, up=True):
        project = "lgbg%s" % secrets.token_hex(4)
        directory = Path(parent) / project
        shutil.copytree(DEMO_DIR, directory)
        ports = dict(ports or {name: stacks.free_port() for name in PORT_VARS})
        env = {var: str(ports[name]) for name, var in PORT_VARS.items()}
        env.update(BLUE_VERSION="blue", GREEN_VERSION="green", GREEN_BROKEN_HEALTH="1" if green_broken else "0")
        (directory / ".env").write_text("# Written by tests/integration/bluegreen_support.py\n"
                                        + "".join("%s=%s\n" % item for item in env.items()))
        (directory / UPSTREAM_FILE).write_text(upstream_text("blue", ports["blue"]))
        stack = cls(directory, ports, client)
        if up:
            try:
                stack.up()
            except BaseException:
                stack.destroy()
                raise
        return stack

    def compose(self, *args, check=True, timeout=180):
        return stacks.run(["docker", "compose", *args], cwd=self.dir, env=stacks.clean_env(), check=check, timeout=timeout)

    def up(self, timeout=60):
        try:
            self.compose("up", "-d", "--wait", "--wait-timeout", str(timeout), timeout=timeout + 60)
        except stacks.CommandError as err:
            logs = self.compose("logs", "--no-color", "--tail", "50", check=False).stdout
            raise stacks.CommandError(err.returncode, err.cmd, err.stdout, "%s\n%s" % (err.stderr, logs)) from None

    def destroy(self):
        down = self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False, timeout=120)
        if down.returncode != 0:
            raise stacks.CommandError(down.returncode, down.args, down.stdout, down.stderr)

    # -- observation -------------------------------------------------------------------------

    def url(self, path="/version", color=None):
        return "http://127.0.0.1:%d%s" % (self.ports[color or "nginx"], path)

    def version(self):
        """Which color answers GET /version through nginx."""
        status, body = stacks.http_get(self.url("/version"))
        return body.strip() if status == 200 else "HTTP %s" % status

    def nginx(self):
        found = self._client.containers.list(all=True, filters={"label": [
            "com.docker.compose.project=%s" % self.project, "com.docker.compose.service=nginx"]})
        assert len(found) == 1, found
        return found[0]

    def nginx_state(self):
        """(container ID, start time, restart count): unchanged when nginx was only reloaded."""
        attrs = self.nginx().attrs
        return attrs["Id"], attrs["State"]["StartedAt"], attrs["RestartCount"]

    def nginx_workers(self):
        """PIDs of nginx's worker processes: new ones after every reload."""
        top = self.nginx().top()
        cmd_at, pid_at = top["Titles"].index("CMD"), top["Titles"].index("PID")
        return sorted(row[pid_at] for row in top["Processes"] if row[cmd_at].startswith("nginx: worker process"))

    def upstream_bytes(self):
        return (self.dir / UPSTREAM_FILE).read_bytes()

    def marker(self):
        import json
        path = self.dir / MARKER_FILE
        return json.loads(path.read_text()) if path.exists() else None

    # -- settings for the role -----------------------------------------------------------

    def colors(self):
        return {color: "127.0.0.1:%d" % self.ports[color] for color in COLORS}

    def host_vars(self, **extra):
        """The blue_green role's settings for this stack (its defaults otherwise)."""
        host_vars = {
            "lastgood_project_dir": str(self.dir),
            "blue_green_colors": self.colors(),
            "blue_green_gate_checks": {
                color: [{"name": "%s-health" % color, "url": self.url("/health", color), "status": [200], "timeout_s": 2}]
                for color in COLORS},
            "blue_green_color_services": {color: "app_%s" % color for color in COLORS},
            "blue_green_gate_deadline_s": 5,
        }
        host_vars.update(extra)
        return host_vars

    def __repr__(self):
        return "BlueGreenStack(%r, ports=%r)" % (self.project, self.ports)
