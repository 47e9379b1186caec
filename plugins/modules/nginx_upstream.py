#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nginx_upstream
short_description: Switch the live color of a blue-green deployment behind nginx, validated and without a restart
version_added: 0.2.0
description:
  - Points an nginx C(upstream) block at the servers of one color (for example V(blue) or V(green)) by
    rewriting the file that nginx includes for it (O(upstream_file), managed entirely by this module).
  - The new file is written beside the old one and renamed over it; then O(validate_command)
    (C(nginx -t)) runs inside the running nginx container of O(nginx_service). When it fails, the previous
    file is put back byte for byte, nothing is reloaded (nginx keeps serving the live color) and the module
    fails with nginx's own one-line error.
  - A validated file is followed by O(reload_command) (C(nginx -s reload)), a graceful reload, never a
    restart, so the container keeps its ID and start time and requests in progress finish. The module then
    polls (every 0.05 s, until O(reload_timeout)) until a worker started by the reload accepts connections and
    no old worker still does, so every request after the module returns reaches the new color.
  - Finally the live color is recorded in O(marker_file) (JSON, written atomically).
  - The live color is read from the upstream file (the color whose servers it names); the marker is used
    only when the file does not exist yet.
  - Running it again for the live color changes nothing.
  - It does not check the target color's health; the M(lastgood.rollback.health_check) module (or the
    lastgood.rollback.blue_green role, which gates before switching) does.
  - The upstream file's directory should be bind-mounted into the nginx container (not the file itself), because a
    file replaced by rename has a new inode, which a single-file bind mount does not see.
  - One switch at a time per project (an exclusive lock on the project directory).
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.project
  - lastgood.rollback.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports the switch it would make (from which color to which, the actions, the diff of the upstream file)
        and checks that the nginx container runs; changes nothing. The new file is validated by C(nginx -t) only in
        a real run, because nginx can only test files it reads.
  diff_mode:
    support: full
    details:
      - The upstream file before and after.
options:
  nginx_service:
    description:
      - The compose service that runs nginx; it must have exactly one running container.
    type: str
    default: nginx
  upstream_file:
    description:
      - The file nginx includes for the upstream, relative to O(project_dir) (it may not lead outside it).
      - The whole file is managed by this module; its directory must exist.
    type: str
    required: true
  upstream_name:
    description:
      - The name of the C(upstream) block (what C(proxy_pass http://<name>) refers to).
    type: str
    default: app
  colors:
    description:
      - Each color and the server address or addresses of its copy of the service, for example
        C(blue=127.0.0.1:18091) and C(green=[127.0.0.1:18092]), see the examples.
      - An entry is an address with optional C(server) parameters (C(127.0.0.1:8080 max_fails=0)); characters that
        could end the directive (C(;), braces, quotes, C(#), line breaks) are refused before anything changes.
    type: dict
    required: true
  color:
    description:
      - The color to switch to.
      - When omitted and there are exactly two colors, the other color than the live one (a switch back).
    type: str
  marker_file:
    description:
      - The file recording the live color, relative to O(project_dir).
    type: str
    default: .lastgood-color
  validate_command:
    description:
      - The command that validates nginx's configuration inside the container (an argument list, no shell).
    type: list
    elements: str
    default: [nginx, -t]
  reload_command:
    description:
      - The command that reloads nginx inside the container (an argument list, no shell).
    type: list
    elements: str
    default: [nginx, -s, reload]
  reload_timeout:
    description:
      - Seconds to wait after the reload for nginx's new workers to serve and the old ones to stop accepting.
    type: float
    default: 15
notes:
  - Only the upstream file and the marker are written; the container is never restarted or recreated.
seealso:
  - module: lastgood.rollback.health_check
"""

EXAMPLES = r"""
- name: Switch the shop to green
  lastgood.rollback.nginx_upstream:
    project_dir: /srv/shop
    upstream_file: upstream/upstream.conf
    colors:
      blue: 127.0.0.1:18091
      green: 127.0.0.1:18092
    color: green

- name: Switch back to the other color (rollback)
  lastgood.rollback.nginx_upstream:
    project_dir: /srv/shop
    upstream_file: upstream/upstream.conf
    colors:
      blue: 127.0.0.1:18091
      green: 127.0.0.1:18092
  register: switched

- name: Show the plan only
  lastgood.rollback.nginx_upstream:
    project_dir: /srv/shop
    upstream_file: upstream/upstream.conf
    colors: {blue: 127.0.0.1:18091, green: 127.0.0.1:18092}
    color: blue
  check_mode: true
  diff: true
"""

RETURN = r"""
from_color:
  description: The live color before the run (from the upstream file), or null when the file matches no color.
  returned: always
  type: str
  sample: blue
to_color:
  description: The color live after the run (or that would be, in check mode).
  returned: always
  type: str
  sample: green
upstream_file:
  description: Absolute path of the upstream file.
  returned: always
  type: str
marker_file:
  description: Absolute path of the marker file.
  returned: always
  type: str
project_name:
  description: The compose project name.
  returned: always
  type: str
nginx_container:
  description: ID of the nginx container (the same before and after, as nginx is reloaded, not restarted).
  returned: always
  type: str
reloaded:
  description: Whether nginx was reloaded.
  returned: always
  type: bool
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
validate:
  description: The validation command run inside the container, its exit code and output.
  returned: when the upstream file was changed (also on failure)
  type: dict
reload_wait_s:
  description: Seconds from the reload command until only new workers accepted connections.
  returned: when reloaded
  type: float
switch_s:
  description: Seconds the switch took (file, validation, reload and wait, marker).
  returned: when changed and not in check mode
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import PROJECT_ARGUMENT_SPEC, load_project
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client
from ansible_collections.lastgood.rollback.plugins.module_utils._nginx import NginxContainer, NginxError, Switch, project_lock


def main():
    argument_spec = dict(
        nginx_service=dict(type="str", default="nginx"),
        upstream_file=dict(type="str", required=True),
        upstream_name=dict(type="str", default="app"),
        colors=dict(type="dict", required=True),
        color=dict(type="str"),
        marker_file=dict(type="str", default=".lastgood-color"),
        validate_command=dict(type="list", elements="str", default=["nginx", "-t"]),
        reload_command=dict(type="list", elements="str", default=["nginx", "-s", "reload"]),
        reload_timeout=dict(type="float", default=15),
    )
    argument_spec.update(PROJECT_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    for option in ("validate_command", "reload_command"):
        if not params[option]:
            module.fail_json(msg="%s must not be empty" % option)

    project = load_project(module, params)
    if params["nginx_service"] not in project.services:
        module.fail_json(msg="service %s is not in compose project %s" % (params["nginx_service"], project.name))
    client = docker_client(module)
    result = dict(changed=False, project_name=project.name, reloaded=False)
    try:
        with project_lock(project.project_dir):
            switch = Switch(project.project_dir, project.name, params["upstream_file"], params["marker_file"],
                            params["upstream_name"], params["colors"], params["color"],
                            params["validate_command"], params["reload_command"], params["reload_timeout"])
            result.update(from_color=switch.from_color, to_color=switch.to_color, upstream_file=switch.upstream_path,
                          marker_file=switch.marker_path, changed=switch.changed, diff=switch.diff(),
                          actions=switch.planned_actions(params["nginx_service"]))
            nginx = NginxContainer(client, project.name, params["nginx_service"])
            result["nginx_container"] = nginx.id
            if switch.changed and not module.check_mode:
                switch.run(nginx, result)
    except NginxError as exc:
        # A refused or failed switch put the previous file back: nothing changed, unless nginx
        # already serves the new color (the error says so and sets changed).
        result["changed"] = False
        result.update(exc.result)
        module.fail_json(msg=exc.msg, **result)
    for warning in switch.warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
