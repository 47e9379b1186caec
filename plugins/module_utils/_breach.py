# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The security-breach procedure: host isolation, secret rotation, snapshot choice, evidence.

Isolation
    Chains of our own (``LASTGOOD_ISO_IN``/``_OUT``/``_FWD``) are inserted first in INPUT,
    OUTPUT and FORWARD of the filter table with one atomic ``iptables-restore --noflush``. They
    accept loopback and TCP to the management (SSH) port from the admin CIDRs (and its
    replies, matched statelessly by source port), and drop everything else. Nothing else in
    the table is touched, so Docker's chains survive, and removal deletes exactly our chains.
    Connections that were established before isolation are cut too (no ESTABLISHED rule): a
    breached host's existing sessions are the attacker's as likely as anyone's.

    Before the rules go in, a revert timer starts: a detached process (own session, no
    inherited descriptors) that sleeps, then removes the chains (and, if that fails, restores
    the rules saved before isolation). ``confirm`` kills it (after checking that the pid still
    runs our timer, by a random token in its arguments), which keeps the isolation; ``lift``
    removes the chains. With ``netns`` every command runs through ``ip netns exec <netns>``:
    that is how tests isolate a disposable namespace instead of the machine they run on.

Secrets
    New values come from ``secrets.token_urlsafe``. They are never returned, logged or put on
    a command line; the old values are not kept anywhere. Database role passwords are set with
    ``ALTER ROLE ... PASSWORD`` carrying a SCRAM verifier computed on the module host (libpq's
    ``PQencryptPasswordConn`` through psycopg2), so not even the server's statement log sees
    the new password.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time

from ansible_collections.lastgood.rollback.plugins.module_utils import _manifest
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError

CHAIN_IN = "LASTGOOD_ISO_IN"
CHAIN_OUT = "LASTGOOD_ISO_OUT"
CHAIN_FWD = "LASTGOOD_ISO_FWD"
CHAINS = ((CHAIN_IN, "INPUT"), (CHAIN_OUT, "OUTPUT"), (CHAIN_FWD, "FORWARD"))
FAMILIES = {
    4: {"save": "iptables-save", "restore": "iptables-restore"},
    6: {"save": "ip6tables-save", "restore": "ip6tables-restore"},
}
STATE_FILE = "isolation.json"
REVERTED_FILE = "isolation-reverted.json"
_NETNS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BreachError(StepError):
    """A refused or failed breach step (one-line msg, details in result)."""


def utc_stamp(moment=None):
    moment = moment if moment is not None else time.time()
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_atomic(path, data, mode=0o600):
    """Write bytes or text to path through a temporary file in the same directory (private by default)."""
    _manifest.write_atomic(path, data, mode)


# -- admin CIDRs ------------------------------------------------------------------------------

def parse_admin_cidrs(values):
    """{4: [networks], 6: [networks]} from a list of CIDR strings; BreachError on any bad one.

    Empty lists, malformed entries and prefixes of length 0 (which would let everyone in and
    isolate nothing) are refused.
    """
    if not values:
        raise BreachError("isolation needs the management path: lastgood_breach_admin_cidrs is empty")
    parsed = {4: [], 6: []}
    for value in values:
        text = str(value).strip()
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise BreachError("admin CIDR %r is not an IPv4 or IPv6 network (e.g. 192.0.2.10/32)" % text)
        if network.prefixlen == 0:
            raise BreachError("admin CIDR %s admits every address: isolation would isolate nothing" % text)
        if str(network) not in [str(n) for n in parsed[network.version]]:
            parsed[network.version].append(network)
    return parsed


def cut_connection(networks, ssh_port, ssh_connection, families=(4, 6)):
    """Why isolating `families` with `networks` ({4: [...], 6: [...]}) and `ssh_port` would cut the SSH
    connection this runs over (`ssh_connection` as sshd sets SSH_CONNECTION: client address and port,
    server address and port), or None when that connection stays open or there is none (a local run)."""
    fields = (ssh_connection or "").split()
    if len(fields) != 4:
        return None
    client, _client_port, _server, server_port = fields
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback or address.version not in families:
        return None
    problems = []
    if not any(address in network for network in networks[address.version]):
        problems.append("%s is in none of the admin CIDRs (add it to lastgood_breach_admin_cidrs)" % address)
    if server_port != str(ssh_port):
        problems.append("it arrives on port %s, not the management port %d (set lastgood_breach_ssh_port)"
                        % (server_port, ssh_port))
    if not problems:
        return None
    return ("isolating would cut the SSH connection this run comes over, from %s to port %s, and leave the host "
            "unreachable: %s; nothing changed" % (address, server_port, "; ".join(problems)))


def ssh_connection_of_this_run():
    """SSH_CONNECTION of this process, else of its nearest ancestor that has it: with become, sudo
    does not pass it on, but the shell of the SSH session this module runs under still has it."""
    if os.environ.get("SSH_CONNECTION"):
        return os.environ["SSH_CONNECTION"]
    pid = os.getppid()
    for _hop in range(32):
        if pid <= 1:
            return None
        try:
            with open("/proc/%d/environ" % pid, "rb") as handle:
                for item in handle.read().split(b"\0"):
                    if item.startswith(b"SSH_CONNECTION="):
                        return item.split(b"=", 1)[1].decode("ascii", "replace")
            with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as handle:
                stat = handle.read()
            pid = int(stat[stat.rfind(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def check_port(port):
    if not isinstance(port, int) or not 0 < port < 65536:
        raise BreachError("the management port must be a TCP port number (1-65535), got %r" % (port,))


def isolation_ruleset(admin_networks, ssh_port):
    """iptables-restore --noflush lines that install (or refresh) the isolation chains.

    Declaring a chain that exists flushes it, so the same lines both install and update.
    """
    lines = ["*filter"]
    lines += [":%s - [0:0]" % chain for chain, _builtin in CHAINS]
    lines.append("-A %s -i lo -j ACCEPT" % CHAIN_IN)
    for network in admin_networks:
        lines.append("-A %s -s %s -p tcp -m tcp --dport %d -j ACCEPT" % (CHAIN_IN, network, ssh_port))
    lines.append("-A %s -j DROP" % CHAIN_IN)
    lines.append("-A %s -o lo -j ACCEPT" % CHAIN_OUT)
    for network in admin_networks:
        lines.append("-A %s -d %s -p tcp -m tcp --sport %d -j ACCEPT" % (CHAIN_OUT, network, ssh_port))
    lines.append("-A %s -j DROP" % CHAIN_OUT)
    lines.append("-A %s -j DROP" % CHAIN_FWD)
    return lines


def install_input(admin_networks, ssh_port, with_jumps):
    """The ruleset, with the jumps from the built-in chains when they are not there yet."""
    lines = isolation_ruleset(admin_networks, ssh_port)
    if with_jumps:
        lines += ["-I %s 1 -j %s" % (builtin, chain) for chain, builtin in CHAINS]
    return "\n".join(lines + ["COMMIT"]) + "\n"


def removal_input(saved_rules=None):
    """iptables-restore --noflush input deleting our jumps and chains: those that `saved_rules`
    (iptables-save output) shows, or, without it, those that an installation creates."""
    lines = ["*filter"]
    jumps = jumps_present(saved_rules) if saved_rules is not None else {c: 1 for c, _b in CHAINS}
    for chain, builtin in CHAINS:
        lines += ["-D %s -j %s" % (builtin, chain)] * jumps.get(chain, 0)
    present = chains_present(saved_rules) if saved_rules is not None else {c for c, _b in CHAINS}
    lines += ["-F %s" % chain for chain, _builtin in CHAINS if chain in present]
    lines += ["-X %s" % chain for chain, _builtin in CHAINS if chain in present]
    return "\n".join(lines + ["COMMIT"]) + "\n"


def _filter_section(saved_rules):
    section, inside = [], False
    for line in saved_rules.splitlines():
        if line.startswith("*"):
            inside = line.strip() == "*filter"
        elif inside:
            section.append(line.strip())
    return section


def chains_present(saved_rules):
    return {line[1:].split()[0] for line in _filter_section(saved_rules) if line.startswith(":")}


def jumps_present(saved_rules):
    counts = {}
    for chain, builtin in CHAINS:
        counts[chain] = sum(1 for line in _filter_section(saved_rules) if line == "-A %s -j %s" % (builtin, chain))
    return counts


def admin_rules(saved_rules):
    """(admin networks as strings, ssh port) that the installed INPUT chain admits."""
    networks, port = [], None
    pattern = re.compile(r"^-A %s -s (\S+) -p tcp -m tcp --dport (\d+) -j ACCEPT$" % CHAIN_IN)
    for line in _filter_section(saved_rules):
        match = pattern.match(line)
        if match:
            networks.append(str(ipaddress.ip_network(match.group(1), strict=False)))
            port = int(match.group(2))
    return networks, port


def is_isolated(saved_rules):
    jumps = jumps_present(saved_rules)
    return all(jumps.get(chain) for chain, _builtin in CHAINS)


# -- the revert timer -------------------------------------------------------------------------

# Runs detached after the module has exited, so it imports nothing from the collection. Its
# only argument is a JSON document: delay, the restore commands and their input files, the
# marker to write, and a token that identifies this timer in /proc/<pid>/cmdline.
TIMER_CODE = r"""
import json, os, subprocess, sys, time
spec = json.loads(sys.argv[1])
time.sleep(spec["delay"])
results = []
for family in spec["families"]:
    ok = False
    for argv, path in family:
        with open(path, "rb") as handle:
            rc = subprocess.run(argv, stdin=handle, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        if rc == 0:
            ok = True
            break
    results.append(ok)
marker = spec["marker"]
with open(marker + ".tmp", "w") as handle:
    json.dump({"reverted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ok": all(results),
               "token": spec["token"]}, handle)
os.replace(marker + ".tmp", marker)
"""


def start_timer(spec):
    """Start the detached revert timer; returns its pid."""
    with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable or "python3", "-c", TIMER_CODE, json.dumps(spec, sort_keys=True)],
            stdin=devnull_in, stdout=devnull_out, stderr=devnull_out,
            close_fds=True, start_new_session=True, cwd="/",
        )
    return proc.pid


def timer_running(timer):
    """True when the pid still runs the timer with this token (a recycled pid is not ours)."""
    if not timer or not timer.get("pid") or not timer.get("token"):
        return False
    try:
        with open("/proc/%d/cmdline" % int(timer["pid"]), "rb") as handle:
            cmdline = handle.read()
        with open("/proc/%d/stat" % int(timer["pid"]), "rb") as handle:
            stat = handle.read()
    except (OSError, ValueError):
        return False
    # A zombie (state Z) has done its work already.
    state = stat.rsplit(b")", 1)[-1].split()[0:1]
    return timer["token"].encode() in cmdline and state != [b"Z"]


def stop_timer(timer, deadline_s=5.0):
    """Kill the timer if it still runs; True when it was running."""
    if not timer_running(timer):
        return False
    try:
        os.kill(int(timer["pid"]), signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + deadline_s
    while timer_running(timer) and time.monotonic() < deadline:
        try:  # our own child when the timer was started by this process (tests)
            os.waitpid(int(timer["pid"]), os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)
    return True


# -- isolation --------------------------------------------------------------------------------

class Isolation:
    """Isolation of one host (or network namespace); `run` is module.run_command."""

    def __init__(self, run, state_dir, netns=None, ipv6=True, which=None):
        self._run = run
        self.state_dir = state_dir
        self.netns = netns or None
        if self.netns and not _NETNS_NAME.match(self.netns):
            raise BreachError("netns %r is not a network namespace name" % self.netns)
        if self.netns and not os.path.exists(os.path.join("/run/netns", self.netns)):
            raise BreachError("network namespace %s does not exist (ip netns list)" % self.netns)
        self._which = which or _which
        self.families = [4]
        if ipv6 and self._which(FAMILIES[6]["restore"]):
            self.families.append(6)
        for family in self.families:
            for tool in FAMILIES[family].values():
                if not self._which(tool):
                    raise BreachError("%s is not installed (Debian: apt-get install iptables)" % tool)

    # paths
    def path(self, name):
        return os.path.join(self.state_dir, name)

    def saved_path(self, family):
        return self.path("rules-before-isolation.v%d" % family)

    def removal_path(self, family):
        return self.path("isolation-remove.v%d" % family)

    def _argv(self, argv):
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + list(argv)

    def _cmd(self, argv, data=None, what=None):
        argv = self._argv(argv)
        rc, out, err = self._run(argv, data=data, binary_data=data is not None)
        if rc != 0:
            raise BreachError("%s failed (rc %d): %s" % (what or " ".join(argv), rc, " ".join(err.split())[:300]),
                              cmd=argv, rc=rc, stdout=out, stderr=err)
        return out

    def save(self, family):
        return self._cmd([FAMILIES[family]["save"]])

    def restore_noflush(self, family, text):
        return self._cmd([FAMILIES[family]["restore"], "--noflush"], data=text,
                         what="%s --noflush" % FAMILIES[family]["restore"])

    # state
    def read_state(self):
        try:
            with open(self.path(STATE_FILE), encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def write_state(self, state):
        write_atomic(self.path(STATE_FILE), json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)

    def reverted_marker(self):
        try:
            with open(self.path(REVERTED_FILE), encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def status(self):
        """What the kernel says (rules) and what the state file says (timer)."""
        rules = {family: self.save(family) for family in self.families}
        isolated = is_isolated(rules[4])
        networks, port = admin_rules(rules[4])
        if 6 in rules:
            networks += admin_rules(rules[6])[0]
        state = self.read_state() or {}
        timer = state.get("timer")
        marker = self.reverted_marker()
        reverted = marker if marker and timer and marker.get("token") == timer.get("token") else None
        return {
            "isolated": isolated,
            "partially_isolated": not isolated and any(jumps_present(r).get(c) for r in rules.values() for c, _b in CHAINS),
            "admin_cidrs": networks if isolated else [],
            "ssh_port": port if isolated else None,
            "netns": self.netns or "",
            "applied_at": state.get("applied_at") if isolated else None,
            "revert_at": state.get("revert_at") if isolated and timer_running(timer) else None,
            "timer_pending": bool(isolated and timer_running(timer)),
            "confirmed_at": state.get("confirmed_at") if isolated else None,
            "reverted_at": reverted.get("reverted_at") if reverted else None,
            "families": ["ipv%d" % f for f in self.families],
        }, rules

    def isolate(self, admin_cidrs, ssh_port, revert_after_s, check_mode):
        networks = parse_admin_cidrs(admin_cidrs)
        check_port(ssh_port)
        if revert_after_s < 0:
            raise BreachError("the revert timer must be 0 (none) or a number of seconds, got %r" % revert_after_s)
        if networks[6] and 6 not in self.families:
            raise BreachError("IPv6 admin CIDRs given but ip6tables-restore is not installed")
        # A namespace's rules never see the management connection, which reaches the host itself.
        cut = None if self.netns else cut_connection(networks, ssh_port, ssh_connection_of_this_run(), self.families)
        if cut:
            raise BreachError(cut)
        before, rules = self.status()
        wanted = sorted(str(n) for family in self.families for n in networks[family])
        plan = {f: install_input(networks[f], ssh_port, with_jumps=not is_isolated(rules[f])) for f in self.families}
        same = before["isolated"] and sorted(before["admin_cidrs"]) == wanted and before["ssh_port"] == ssh_port
        actions = []
        if same:
            return False, before, before, actions, plan
        after = dict(before, isolated=True, admin_cidrs=wanted, ssh_port=ssh_port)
        if not before["isolated"]:
            actions.append("save the current rules to %s" % self.state_dir)
        actions.append("isolate%s: drop all traffic but loopback and tcp/%d from %s"
                       % (" netns " + self.netns if self.netns else "", ssh_port, ", ".join(wanted)))
        if revert_after_s:
            actions.append("start a revert timer: the isolation is removed after %d s unless confirmed" % revert_after_s)
        if check_mode:
            return True, before, after, actions, plan

        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        state = self.read_state() if before["isolated"] else None
        state = state or {}
        if not before["isolated"]:
            # Saved only from a host that is not isolated: these are the rules to come back to.
            for family in self.families:
                write_atomic(self.saved_path(family), rules[family], 0o600)
                write_atomic(self.removal_path(family), removal_input(), 0o600)
            state["applied_at"] = utc_stamp()
        stop_timer(state.get("timer"))
        state["timer"] = None
        state["confirmed_at"] = None
        if revert_after_s:
            # The timer starts before any rule: there is no moment without a way back.
            token = secrets.token_hex(8)
            spec = {
                "delay": revert_after_s,
                "token": token,
                "marker": self.path(REVERTED_FILE),
                "families": [
                    [[self._argv([FAMILIES[f]["restore"], "--noflush"]), self.removal_path(f)],
                     [self._argv([FAMILIES[f]["restore"]]), self.saved_path(f)]]
                    for f in self.families
                ],
            }
            state["timer"] = {"pid": start_timer(spec), "token": token}
            state["revert_at"] = utc_stamp(time.time() + revert_after_s)
        state.update(netns=self.netns or "", admin_cidrs=wanted, ssh_port=ssh_port, revert_after_s=revert_after_s)
        self.write_state(state)
        done = []
        try:
            for family in self.families:
                self.restore_noflush(family, plan[family])
                done.append(family)
        except BreachError:
            for family in done:
                self._remove(family)
            stop_timer(state.get("timer"))
            raise
        after, _rules = self.status()
        return True, before, after, actions, plan

    def _remove(self, family):
        current = self.save(family)
        if chains_present(current) & {c for c, _b in CHAINS}:
            self.restore_noflush(family, removal_input(current))

    def confirm(self, check_mode):
        before, _rules = self.status()
        if not before["isolated"]:
            if before["reverted_at"]:
                raise BreachError("the revert timer already removed the isolation at %s; isolate again"
                                  % before["reverted_at"])
            raise BreachError("the host is not isolated: nothing to confirm")
        if not before["timer_pending"]:
            return False, before, before, []
        after = dict(before, timer_pending=False, revert_at=None, confirmed_at=utc_stamp())
        actions = ["stop the revert timer: the isolation stays until lifted"]
        if not check_mode:
            state = self.read_state() or {}
            stop_timer(state.get("timer"))
            state.update(timer=None, revert_at=None, confirmed_at=after["confirmed_at"])
            self.write_state(state)
            after, _rules = self.status()
        return True, before, after, actions

    def lift(self, check_mode):
        before, rules = self.status()
        state = self.read_state() or {}
        pending = timer_running(state.get("timer"))
        present = any(chains_present(rules[f]) & {c for c, _b in CHAINS} for f in self.families)
        if not present and not pending:
            return False, before, before, []
        actions = ["remove the isolation chains%s" % (" in netns " + self.netns if self.netns else "")]
        if pending:
            actions.append("stop the revert timer")
        after = dict(before, isolated=False, partially_isolated=False, admin_cidrs=[], ssh_port=None,
                     applied_at=None, revert_at=None, timer_pending=False, confirmed_at=None)
        if not check_mode:
            stop_timer(state.get("timer"))
            for family in reversed(self.families):
                self._remove(family)
            if state:
                state.update(timer=None, revert_at=None, lifted_at=utc_stamp())
                self.write_state(state)
            after, _rules = self.status()
        return True, before, after, actions


def _which(name):
    for directory in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# -- secret rotation --------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^(\s*(?:export\s+)?)([A-Za-z_][A-Za-z0-9_]*)(\s*=).*$")
SECRET_BYTES = 32


def new_secret(nbytes=SECRET_BYTES):
    """A random URL-safe value: no quoting needed in .env files, shells or connection strings."""
    return secrets.token_urlsafe(nbytes)


def env_keys_present(text):
    keys = set()
    for line in text.splitlines():
        match = _ENV_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            keys.add(match.group(2))
    return keys


def replace_env_values(text, new_values):
    """`text` (a .env file) with the values of the keys in `new_values` replaced; every other
    line, comment and the line order stay as they were. Every occurrence of a key is replaced
    (compose would use the last one)."""
    out = []
    for line in text.splitlines(True):
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        match = _ENV_LINE.match(body)
        if match and match.group(2) in new_values and not body.lstrip().startswith("#"):
            body = "%s%s%s%s" % (match.group(1), match.group(2), match.group(3), new_values[match.group(2)])
        out.append(body + ending)
    return "".join(out)


def read_env_value(text, key):
    value = None
    for line in text.splitlines():
        match = _ENV_LINE.match(line)
        if match and match.group(2) == key and not line.lstrip().startswith("#"):
            value = line.split("=", 1)[1].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                # Single-quoted, compose reads every character as it is but \' (dotenv_value writes that).
                value = value[1:-1].replace("\\'", "'") if value[0] == "'" else value[1:-1]
    return value


def inside(base, relative):
    """The absolute path of `relative` under `base`; BreachError when it leaves `base`."""
    base = os.path.realpath(base)
    path = os.path.realpath(os.path.join(base, relative))
    if path != base and not path.startswith(base + os.sep):
        raise BreachError("secret file %s is not inside the project directory %s" % (relative, base))
    return path


class SecretRotation:
    """Plan and rotate .env keys, whole secret files and PostgreSQL role passwords.

    `roles` is a list of {role, env_key}: the role's new password is set in the database and
    written to `env_key` of the .env file (what the stack reads it from). `connect` returns an
    open psycopg2 connection (to `database`), or None when no database work is asked for.
    """

    def __init__(self, project_dir, env_file, env_keys, files, roles, nbytes=SECRET_BYTES):
        self.project_dir = project_dir
        self.env_path = os.path.join(project_dir, env_file)
        self.env_keys = list(dict.fromkeys(env_keys or []))
        self.files = list(dict.fromkeys(files or []))
        self.roles = roles or []
        self.nbytes = nbytes
        for key in self.env_keys + [r.get("env_key") for r in self.roles if r.get("env_key")]:
            if not _ENV_KEY.match(key):
                raise BreachError("%r is not a .env variable name" % key)
        for entry in self.roles:
            if not entry.get("role"):
                raise BreachError("every database role to rotate needs a name (role)")

    def plan(self):
        """Check everything named exists; returns the actions (names only)."""
        if not os.path.isdir(self.project_dir):
            raise BreachError("project directory %s does not exist" % self.project_dir)
        actions = []
        wanted_keys = self.env_keys + [r["env_key"] for r in self.roles if r.get("env_key")]
        if wanted_keys:
            try:
                with open(self.env_path, encoding="utf-8") as handle:
                    present = env_keys_present(handle.read())
            except OSError as exc:
                raise BreachError("cannot read %s: %s" % (self.env_path, exc.strerror))
            missing = [key for key in wanted_keys if key not in present]
            if missing:
                raise BreachError("%s has no %s: nothing rotated" % (self.env_path, ", ".join(missing)))
        for key in self.env_keys:
            actions.append("rotate %s in %s" % (key, os.path.basename(self.env_path)))
        for rel in self.files:
            path = inside(self.project_dir, rel)
            if not os.path.isfile(path):
                raise BreachError("secret file %s does not exist: nothing rotated" % path)
            actions.append("rotate the content of %s" % rel)
        for entry in self.roles:
            actions.append("set a new password for database role %s%s" % (
                entry["role"], " (written to %s)" % entry["env_key"] if entry.get("env_key") else ""))
        return actions

    def check_roles(self, conn):
        if not self.roles:
            return
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([r["role"] for r in self.roles],))
            found = {row[0] for row in cur.fetchall()}
        missing = [r["role"] for r in self.roles if r["role"] not in found]
        if missing:
            raise BreachError("database role(s) %s do not exist: nothing rotated" % ", ".join(missing))

    def rotate(self, conn, encrypt):
        """Rotate everything; `encrypt(password, role)` returns the verifier ALTER ROLE stores.

        The new .env and files are staged next to the originals first; the role passwords are
        committed next; then the staged files replace the originals. A failure before the
        commit leaves everything as it was.
        """
        values = {key: new_secret(self.nbytes) for key in self.env_keys}
        role_values = {}
        for entry in self.roles:
            if entry.get("env_key") in values:
                role_values[entry["role"]] = values[entry["env_key"]]
            else:
                role_values[entry["role"]] = new_secret(self.nbytes)
                if entry.get("env_key"):
                    values[entry["env_key"]] = role_values[entry["role"]]
        staged = []
        try:
            if values:
                with open(self.env_path, encoding="utf-8") as handle:
                    text = handle.read()
                mode = os.stat(self.env_path).st_mode & 0o7777
                staged.append(self._stage(self.env_path, replace_env_values(text, values), mode))
            for rel in self.files:
                path = inside(self.project_dir, rel)
                with open(path, "rb") as handle:
                    ending = b"\n" if handle.read().endswith(b"\n") else b""
                staged.append(self._stage(path, new_secret(self.nbytes).encode() + ending, os.stat(path).st_mode & 0o7777))
            if self.roles:
                from psycopg2 import sql  # only here: rotating files needs no psycopg2

                with conn.cursor() as cur:
                    for entry in self.roles:
                        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(entry["role"])),
                                    (encrypt(role_values[entry["role"]], entry["role"]),))
                conn.commit()
        except BaseException:
            for tmp, _path in staged:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            raise
        for tmp, path in staged:
            os.replace(tmp, path)
        return {
            "env_keys": sorted(values),
            "files": list(self.files),
            "roles": [r["role"] for r in self.roles],
        }

    @staticmethod
    def _stage(path, data, mode):
        if isinstance(data, str):
            data = data.encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".lastgood-rotate-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        try:
            stat = os.stat(path)
            os.chown(tmp, stat.st_uid, stat.st_gid)
        except PermissionError:
            pass
        return tmp, path


def run_reset_sql(conn, statement):
    """Run the password-reset statement in one transaction; the number of rows it touched."""
    with conn.cursor() as cur:
        cur.execute(statement)
        count = cur.rowcount
    conn.commit()
    return count


# -- the snapshot to restore ------------------------------------------------------------------

def parse_moment(text):
    """An aware UTC datetime from ISO 8601 (``2026-11-30T10:00:00Z``, offsets allowed) or a
    snapshot-id style stamp (``20261130T100000Z``); BreachError otherwise."""
    value = str(text or "").strip()
    for fmt in ("%Y%m%dT%H%M%SZ",):
        try:
            return datetime.datetime.strptime(value, fmt).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            pass
    try:
        moment = datetime.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise BreachError("breach time %r is not an ISO 8601 time (e.g. 2026-11-30T10:00:00Z)" % value)
    if moment.tzinfo is None:
        raise BreachError("breach time %r has no time zone: give it in UTC (...Z) or with an offset" % value)
    return moment.astimezone(datetime.timezone.utc)


# -- evidence ---------------------------------------------------------------------------------

def sha256_path(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def changed_files(project_dir, manifest):
    """Recorded configuration files whose content differs now: [{path, recorded, now}] (sha256, None if gone)."""
    found = []
    for rel, meta in sorted((manifest.get("files") or {}).items()):
        path = rel if os.path.isabs(rel) else os.path.join(project_dir, rel)
        try:
            now = sha256_path(path)
        except OSError:
            now = None
        if now != meta.get("sha256"):
            found.append({"path": rel, "recorded": meta.get("sha256"), "now": now})
    return found


def write_sums(directory, name="SHA256SUMS"):
    """sha256 of every file under directory (but the sums file), `sha256sum -c` format; the count."""
    lines = []
    for base, dirs, files in os.walk(directory):
        dirs.sort()
        for each in sorted(files):
            path = os.path.join(base, each)
            rel = os.path.relpath(path, directory)
            if rel != name:
                lines.append("%s  %s" % (sha256_path(path), rel))
    write_atomic(os.path.join(directory, name), "\n".join(lines) + "\n", 0o600)
    return len(lines)


STEPS_LOG = "steps.log"


def append_step(incident_dir, step, detail="", moment=None):
    """Append `<UTC time> <step> <detail>` to <incident_dir>/steps.log (created 0600)."""
    moment = time.time() if moment is None else moment
    stamp = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    line = "%s %s%s\n" % (stamp, step, (" " + " ".join(str(detail).split())) if detail else "")
    os.makedirs(incident_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(incident_dir, STEPS_LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line)
    return line.rstrip("\n")
