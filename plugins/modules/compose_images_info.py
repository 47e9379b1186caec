#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_images_info
short_description: Read which image each service of a Docker Compose project really runs
version_added: 0.1.0
description:
  - Resolves the project the way C(docker compose) does, then reports per service the configured image
    reference, the image ID that reference resolves to now, and the image ID every container of the
    service actually runs. A deploy that moved a tag shows up as the two IDs differing.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.project
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
  - lastgood.rollback.attributes.INFO_MODULE
"""

EXAMPLES = r"""
- name: What does the stack run right now?
  lastgood.rollback.compose_images_info:
    project_dir: /srv/shop
  register: live

- name: Services whose containers run something other than their configured reference
  ansible.builtin.debug:
    msg: >-
      {{ live.services | dict2items
         | selectattr('value.container_image_ids', 'ne', [live.services[item.key].configured_image_id])
         | map(attribute='key') | list }}
"""

RETURN = r"""
project:
  description: The resolved project.
  returned: always
  type: dict
  contains:
    name:
      description: Compose project name.
      type: str
    dir:
      description: Absolute project directory.
      type: str
    compose_files:
      description: Compose files in use, relative to the project directory.
      type: list
      elements: str
services:
  description: Per service name, what is configured and what runs.
  returned: always
  type: dict
  sample:
    app:
      image: lastgood-demo/app:latest
      image_id: sha256:4f5e...
      configured_image_id: sha256:4f5e...
      running: true
      container_image_ids: [sha256:4f5e...]
      containers:
        - {id: 9b1c..., name: shop-app-1, image_id: sha256:4f5e..., state: running, health: healthy}
      build: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_ARGUMENT_SPEC,
    load_project,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import docker_client
from ansible_collections.lastgood.rollback.plugins.module_utils._state import live_services


def main():
    module = AnsibleModule(argument_spec=dict(PROJECT_ARGUMENT_SPEC), supports_check_mode=True)
    project = load_project(module, module.params)
    client = docker_client(module)
    module.exit_json(
        changed=False,
        project=dict(name=project.name, dir=project.project_dir, compose_files=project.compose_files()),
        services=live_services(project, client),
    )


if __name__ == "__main__":
    main()
