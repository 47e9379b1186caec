"""Disposable hosts for the security-breach tests: network namespaces the tests create.

``Netns.create()`` builds three namespaces, each named ``lgbreach-<hex>-<role>``:

    host   the host that gets isolated (the module's ``netns`` option points at it)
    admin  the operator's side: 169.254.<n>.2, inside the admin CIDR 169.254.<n>.0/30
    other  any other machine: 169.254.<n>.6, outside the admin CIDR

joined by two veth pairs (host 169.254.<n>.1 <-> admin, host 169.254.<n>.5 <-> other). The
links are created directly inside the namespaces (``ip -n``), so the machine's own namespace
never sees an interface, an address or a rule of these tests; link-local addresses keep them
clear of every private and public range. ``destroy()`` deletes the namespaces, which removes
their links, rules and the servers' sockets.

Servers and clients are small Python programs started with ``ip netns exec``.

``run_module_direct`` runs a module of this checkout without ansible-playbook (the JSON
arguments file is what ansible's own module runner hands it), because the revert-timer
tests need results well within a few seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO_ROOT / ".collections"
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)

SSH_PORT = 2222
OTHER_PORT = 8080
OUTBOUND_PORT = 9090

SERVER_CODE = r"""
import socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(16)
print("listening", flush=True)
while True:
    conn, _peer = srv.accept()
    try:
        conn.sendall(b"hello\n")
    finally:
        conn.close()
"""

CLIENT_CODE = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as conn:
        conn.settimeout(float(sys.argv[3]))
        data = conn.recv(16)
    print("ok" if data == b"hello\n" else "no-greeting")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as err:
    print("error:%s" % err.errno)
"""


def sh(args, check=True, **kwargs):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s %s" % (" ".join(map(str, args)), proc.returncode, proc.stdout, proc.stderr))
    return proc


class Netns:
    """Three disposable namespaces: host (isolated), admin (allowed), other (not allowed)."""

    def __init__(self):
        self.tag = secrets.token_hex(3)
        self.subnet = 100 + secrets.randbelow(150)
        self.host = "lgbreach-%s-host" % self.tag
        self.admin = "lgbreach-%s-admin" % self.tag
        self.other = "lgbreach-%s-other" % self.tag
        self.host_ip_admin_side = "169.254.%d.1" % self.subnet
        self.admin_ip = "169.254.%d.2" % self.subnet
        self.host_ip_other_side = "169.254.%d.5" % self.subnet
        self.other_ip = "169.254.%d.6" % self.subnet
        self.admin_cidr = "169.254.%d.0/30" % self.subnet
        self._servers = []

    @classmethod
    def create(cls):
        self = cls()
        try:
            for name in (self.host, self.admin, self.other):
                sh(["ip", "netns", "add", name])
                sh(["ip", "-n", name, "link", "set", "lo", "up"])
            for peer, host_ip, peer_ip in ((self.admin, self.host_ip_admin_side, self.admin_ip),
                                           (self.other, self.host_ip_other_side, self.other_ip)):
                # Both ends are born inside the namespaces: nothing appears on the machine itself.
                sh(["ip", "-n", self.host, "link", "add", "vh-" + peer[-5:], "type", "veth",
                    "peer", "name", "vp", "netns", peer])
                sh(["ip", "-n", self.host, "addr", "add", host_ip + "/30", "dev", "vh-" + peer[-5:]])
                sh(["ip", "-n", self.host, "link", "set", "vh-" + peer[-5:], "up"])
                sh(["ip", "-n", peer, "addr", "add", peer_ip + "/30", "dev", "vp"])
                sh(["ip", "-n", peer, "link", "set", "vp", "up"])
        except BaseException:
            self.destroy()
            raise
        return self

    def serve(self, namespace, port):
        """Start a greeting TCP server on every address of `namespace`, port `port`."""
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            ["ip", "netns", "exec", namespace, str(PYTHON), "-c", SERVER_CODE, str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._servers.append(proc)
        line = proc.stdout.readline()
        if line.strip() != "listening":
            raise RuntimeError("server in %s:%d did not start: %s" % (namespace, port, proc.stderr.read()))
        return proc

    def connect(self, namespace, address, port, timeout=1.0):
        """ok | timeout | refused | error:<errno>, seen from `namespace`."""
        proc = sh(["ip", "netns", "exec", namespace, PYTHON, "-c", CLIENT_CODE, address, port, timeout])
        return proc.stdout.strip()

    def paths(self, timeout=0.7):
        """The four paths the tests judge isolation by."""
        return {
            "admin->ssh": self.connect(self.admin, self.host_ip_admin_side, SSH_PORT, timeout),
            "admin->other_port": self.connect(self.admin, self.host_ip_admin_side, OTHER_PORT, timeout),
            "other->ssh": self.connect(self.other, self.host_ip_other_side, SSH_PORT, timeout),
            "host->outbound": self.connect(self.host, self.admin_ip, OUTBOUND_PORT, timeout),
        }

    def iptables_save(self, family=4):
        tool = "iptables-save" if family == 4 else "ip6tables-save"
        return sh(["ip", "netns", "exec", self.host, tool]).stdout

    def destroy(self):
        for proc in self._servers:
            proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                stream.close()
        self._servers = []
        for name in (self.host, self.admin, self.other):
            sh(["ip", "netns", "del", name], check=False)


OPEN = {"admin->ssh": "ok", "admin->other_port": "ok", "other->ssh": "ok", "host->outbound": "ok"}


def run_module_direct(module, args, check=False, env=None, timeout=120):
    """Run plugins/modules/<module>.py of this checkout with `args`; returns its JSON result.

    The arguments go in a 0600 file (they may hold no secrets, but the habit costs nothing).
    """
    import tempfile

    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=bool(check), _ansible_diff=True)}
    fd, path = tempfile.mkstemp(prefix="lgbreach-args-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        merged = dict(os.environ, PYTHONPATH=str(COLLECTIONS), **(env or {}))
        proc = subprocess.run(
            [str(PYTHON), "-m", "ansible_collections.lastgood.rollback.plugins.modules.%s" % module, path],
            capture_output=True, text=True, timeout=timeout, env=merged, cwd=str(REPO_ROOT), check=False,
        )
    finally:
        os.unlink(path)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError("module %s printed no JSON (rc %d): %s %s" % (module, proc.returncode, proc.stdout, proc.stderr))
    result["_rc"] = proc.returncode
    result["_stdout"] = proc.stdout
    result["_stderr"] = proc.stderr
    return result


def wait_for(predicate, timeout, interval=0.2, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError("%s: not reached within %s s" % (message, timeout))
        time.sleep(interval)
