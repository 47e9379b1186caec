#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_isolation
short_description: Cut a host off the network except for its management path, with an automatic revert timer
version_added: 0.1.0
description:
  - O(state=isolate) inserts chains of its own (C(LASTGOOD_ISO_IN), C(LASTGOOD_ISO_OUT), C(LASTGOOD_ISO_FWD)) first in
    C(INPUT), C(OUTPUT) and C(FORWARD) of the filter table, with one atomic C(iptables-restore --noflush) per address
    family. They accept loopback and TCP to O(ssh_port) from O(admin_cidrs) (and its replies) and drop everything
    else, including connections established before. The rest of the table (for example Docker's chains) is not
    touched. The rules found before are saved to O(state_dir) first.
  - Before any rule goes in, a revert timer starts (unless O(revert_after_s=0)) - a detached process that removes the
    isolation after O(revert_after_s) seconds, so that a wrong admin CIDR cannot lock anyone out for good.
  - Refused, changing nothing, when the SSH connection the module runs over (C(SSH_CONNECTION), read from the SSH
    session's processes when C(become) did not pass it on) comes from outside O(admin_cidrs) or arrives on another
    port than O(ssh_port) - the isolation would cut it. Not checked with O(netns).
  - O(state=confirm) stops the timer; run it over a new connection to prove the management path works.
    The isolation then stays until O(state=lift).
  - O(state=lift) removes the isolation chains (and a pending timer); O(state=status) only reports.
  - The admin CIDRs are validated before anything is applied; an empty list, a malformed entry or a C(/0) prefix is
    refused and nothing changes.
  - IPv6 is isolated too when C(ip6tables-restore) exists (see O(ipv6)).
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Reports the rules that would be installed (RV(rules)) and whether the timer would start or stop.
  diff_mode:
    support: full
    details:
      - Shows the isolation status before and after.
requirements:
  - C(iptables) (C(iptables-save), C(iptables-restore), nftables or legacy backend) on the managed host.
  - C(ip) from iproute2 when O(netns) is set.
options:
  state:
    description:
      - What to do.
    type: str
    choices: [isolate, confirm, lift, status]
    default: isolate
  admin_cidrs:
    description:
      - Networks (IPv4 or IPv6 CIDR) from which the management path stays open. Required for O(state=isolate).
    type: list
    elements: str
    default: []
  ssh_port:
    description:
      - TCP port of the management path (SSH) that stays open for O(admin_cidrs).
    type: int
    default: 22
  revert_after_s:
    description:
      - Seconds after which the isolation is removed again unless O(state=confirm) ran. V(0) starts no timer.
    type: int
    default: 300
  state_dir:
    description:
      - Directory on the managed host for the saved rules, the timer's state and its revert marker.
        Keep one per host (and network namespace); O(state=lift) reads it.
    type: path
    default: /var/lib/lastgood/isolation
  netns:
    description:
      - Run every firewall command inside this network namespace (C(ip netns exec)) instead of the host's own.
        Tests use it to isolate a disposable namespace; production leaves it empty.
    type: str
    default: ""
  incident_dir:
    description:
      - When the task changes something, copy the saved rules into this directory and append a timestamped line to its
        C(steps.log).
    type: path
  ipv6:
    description:
      - Isolate IPv6 too when C(ip6tables-restore) is installed. Without IPv6 admin CIDRs the IPv6 path is closed
        except loopback.
    type: bool
    default: true
notes:
  - Connections established before isolation are cut too, on purpose - on a breached host they may be the attacker's.
    Run the playbook from an address inside O(admin_cidrs), or the run itself loses its connection.
"""

EXAMPLES = r"""
- name: Isolate, keeping SSH from the bastion; revert in 5 minutes unless confirmed
  lastgood.rollback.host_isolation:
    admin_cidrs: [192.0.2.10/32]
    revert_after_s: 300

- name: Reconnect, proving the management path works
  ansible.builtin.meta: reset_connection

- name: Confirm - the isolation stays until lifted
  lastgood.rollback.host_isolation:
    state: confirm

- name: Lift the isolation
  lastgood.rollback.host_isolation:
    state: lift
"""

RETURN = r"""
isolation:
  description: The isolation status after the task.
  returned: always
  type: dict
  contains:
    isolated:
      description: Whether the isolation chains are installed (IPv4).
      type: bool
    admin_cidrs:
      description: Networks the management path is open for.
      type: list
      elements: str
    ssh_port:
      description: Management port.
      type: int
    timer_pending:
      description: Whether the revert timer is still running.
      type: bool
    revert_at:
      description: UTC time the timer removes the isolation (when pending).
      type: str
    applied_at:
      description: UTC time the isolation was applied.
      type: str
    confirmed_at:
      description: UTC time the isolation was confirmed.
      type: str
    reverted_at:
      description: UTC time the revert timer removed the last isolation, if it did.
      type: str
    netns:
      description: The network namespace, or empty for the host.
      type: str
    families:
      description: Address families handled (C(ipv4), C(ipv6)).
      type: list
      elements: str
saved_rules:
  description: Files on the managed host holding the rules found before the isolation (C(iptables-save) output).
  returned: always
  type: list
  elements: str
rules:
  description: The C(iptables-restore --noflush) input per family (C(ipv4), C(ipv6)) that was or would be applied.
  returned: when O(state=isolate)
  type: dict
actions:
  description: What was (or, in check mode, would be) done.
  returned: always
  type: list
  elements: str
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._breach import BreachError, Isolation, append_step
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import fail_step


def log_to_incident(params, state, after, saved):
    incident = params["incident_dir"]
    if state == "isolate":
        for path in saved:
            shutil.copyfile(path, os.path.join(incident, os.path.basename(path)))
            os.chmod(os.path.join(incident, os.path.basename(path)), 0o600)
        detail = "tcp/%s from %s and loopback only%s; %s" % (
            after["ssh_port"], ", ".join(after["admin_cidrs"]), " (netns %s)" % after["netns"] if after["netns"] else "",
            "reverts at %s unless confirmed" % after["revert_at"] if after["timer_pending"] else "no revert timer")
        append_step(incident, "isolated", detail)
    elif state == "confirm":
        append_step(incident, "isolation-confirmed", "revert timer stopped; isolation stays until lifted")
    elif state == "lift":
        append_step(incident, "isolation-lifted")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="isolate", choices=["isolate", "confirm", "lift", "status"]),
            admin_cidrs=dict(type="list", elements="str", default=[]),
            ssh_port=dict(type="int", default=22),
            revert_after_s=dict(type="int", default=300),
            state_dir=dict(type="path", default="/var/lib/lastgood/isolation"),
            netns=dict(type="str", default=""),
            ipv6=dict(type="bool", default=True),
            incident_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    state = params["state"]
    result = dict(changed=False, actions=[])
    try:
        isolation = Isolation(module.run_command, params["state_dir"], params["netns"], params["ipv6"])
        if state == "status":
            before, _rules = isolation.status()
            after = before
        elif state == "isolate":
            changed, before, after, actions, plan = isolation.isolate(
                params["admin_cidrs"], params["ssh_port"], params["revert_after_s"], module.check_mode)
            result.update(changed=changed, actions=actions, rules={"ipv%d" % f: text for f, text in plan.items()})
        elif state == "confirm":
            changed, before, after, actions = isolation.confirm(module.check_mode)
            result.update(changed=changed, actions=actions)
        else:
            changed, before, after, actions = isolation.lift(module.check_mode)
            result.update(changed=changed, actions=actions)
    except BreachError as exc:
        fail_step(module, exc, changed=False)
    saved = [isolation.saved_path(f) for f in isolation.families]
    if result["changed"] and params["incident_dir"] and not module.check_mode:
        log_to_incident(params, state, after, [path for path in saved if os.path.exists(path)])
    result.update(
        isolation=after,
        saved_rules=[path for path in saved if os.path.exists(path)],
        diff=dict(before=before, after=after),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
