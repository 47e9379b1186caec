# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # Options of every module that addresses a Docker Compose project.
    DOCUMENTATION = r"""
options:
  project_dir:
    description:
      - The compose project directory (the directory C(docker compose) runs in).
    type: path
    required: true
  files:
    description:
      - Compose files, relative to O(project_dir).
      - When omitted, the files C(docker compose) itself picks are used
        (C(COMPOSE_FILE) from the environment or C(.env), else C(compose.yaml) and its variants, with the
        override file compose adds by itself, C(compose.override.yaml) and its variants).
    type: list
    elements: str
  project_name:
    description:
      - The compose project name.
      - When omitted, the name C(docker compose) would use (C(COMPOSE_PROJECT_NAME), the C(name) key
        of the compose file, else the directory name).
    type: str
requirements:
  - Docker Engine with the C(docker compose) v2 CLI plugin on the managed host.
  - The Docker SDK for Python (C(docker)) on the managed host.
"""

    # For modules that only need the project's name to find its snapshots.
    LOOKUP = r"""
options:
  project_dir:
    description:
      - The compose project directory; used to find the project name the way C(docker compose)
        would when O(project_name) is not given.
    type: path
  files:
    description:
      - Compose files, relative to O(project_dir).
    type: list
    elements: str
  project_name:
    description:
      - The compose project name. One of O(project_dir) and O(project_name) is required.
    type: str
"""
