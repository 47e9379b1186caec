# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # How the PostgreSQL modules reach the server: directly, or inside a compose service's container.
    DOCUMENTATION = r"""
options:
  database:
    description:
      - Name of the database. Any name PostgreSQL accepts (quotes, spaces, C(;), C(..)) is handled as an
        identifier; a name longer than 63 bytes or containing a NUL character is refused.
    type: str
    required: true
  host:
    description:
      - Direct mode (no O(service)) - host name or address of the server, or a Unix socket directory.
        Defaults to V(127.0.0.1).
      - Compose mode - the host the tools connect to from inside the container. By default they connect
        over the container's local Unix socket (for example C(/var/run/postgresql)).
    type: str
  port:
    description:
      - Port of the server. In compose mode over the local socket, the port selects the socket file
        (C(.s.PGSQL.<port>)).
    type: int
    default: 5432
  user:
    description:
      - Database user. Restores need a superuser (or a user that owns the database, may create databases
        and may terminate the sessions of the database).
    type: str
    default: postgres
  password:
    description:
      - Password of O(user). Defaults to the E(PGPASSWORD) environment variable of the module.
      - Never put on a command line. Direct mode hands it to psycopg2 and, through the environment, to
        C(pg_dump)/C(pg_restore). Compose mode runs C(docker compose exec -e PGPASSWORD), naming the
        variable only; docker takes its value from the environment of the C(docker compose) process.
      - Not needed in compose mode when the container's local socket uses C(peer) or C(trust)
        authentication (the default of the PostgreSQL images), see O(container_user).
    type: str
  maintenance_db:
    description:
      - Database the modules connect to for catalog queries, C(CREATE DATABASE), renames and drops.
    type: str
    default: postgres
  connect_timeout:
    description:
      - Seconds to wait for a connection.
    type: int
    default: 10
  bin_dir:
    description:
      - Directory of C(pg_dump), C(pg_restore) and C(psql) (on the managed host in direct mode, inside the
        container in compose mode). By default they are looked up on E(PATH).
      - C(pg_dump) must be at least as new as the server.
    type: str
  project_dir:
    description:
      - Compose mode - the compose project directory. Requires O(service).
    type: path
  files:
    description:
      - Compose mode - compose files, relative to O(project_dir). Default - what C(docker compose) picks.
    type: list
    elements: str
  project_name:
    description:
      - Compose mode - the compose project name. Default - what C(docker compose) picks.
    type: str
  service:
    description:
      - Compose mode - the compose service that runs PostgreSQL. C(pg_dump), C(pg_restore) and C(psql) run
        inside its container through C(docker compose exec -T); dumps are streamed out of it and archives
        into it, so the server's port needs not be reachable from the managed host.
      - Parallel restores (more than one job) and directory-format archives are copied into a private
        directory under C(/tmp) of the container first (pg_restore must seek in them), and removed afterwards.
    type: str
  container_user:
    description:
      - Compose mode - the user the tools run as inside the container (C(docker compose exec --user)).
        With the default C(postgres), local socket connections as the database user C(postgres) pass
        C(peer) authentication.
    type: str
    default: postgres
requirements:
  - psycopg2 (C(psycopg2-binary)) on the managed host.
  - Direct mode - the PostgreSQL client programs C(pg_dump), C(pg_restore) on the managed host.
  - Compose mode - Docker Engine with the C(docker compose) v2 CLI plugin on the managed host; C(pg_dump),
    C(pg_restore), C(psql), C(tar), C(stat), C(mkdir) and C(rm) inside the service's container.
notes:
  - Every program runs as an argument list, never through a shell.
"""
