# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # How the Redis modules reach the server: redis-cli inside the compose service.
    DOCUMENTATION = r"""
options:
  service:
    description:
      - The compose service that runs the Redis server (one container).
    type: str
    required: true
  port:
    description:
      - Port the server listens on inside the container (C(redis-cli -p)); redis-cli's default, 6379, when omitted.
    type: int
  user:
    description:
      - ACL user name (C(redis-cli --user)).
    type: str
  password:
    description:
      - Password of the server or of O(user). Given to redis-cli as C(REDISCLI_AUTH) through the environment.
      - Defaults to the environment variable C(REDISCLI_AUTH) of the module.
    type: str
"""
