#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: secret_rotate
short_description: Give .env keys, secret files and PostgreSQL role passwords new random values
version_added: 0.1.0
description:
  - Replaces the values of O(env_keys) in the project's C(.env) file and the whole content of O(files) (relative to
    O(project_dir)) with new random values (C(secrets.token_urlsafe)), and sets new passwords for O(database_roles),
    writing each one to the C(.env) key the stack reads it from.
  - New values are never returned, logged or put on a command line, and the old values are not kept anywhere.
    Results name the keys, files and roles only.
  - Role passwords are set with C(ALTER ROLE ... PASSWORD) carrying a SCRAM-SHA-256 verifier computed on the managed
    host (libpq's C(PQencryptPasswordConn)), so the new password does not reach the server, its statement log or
    C(pg_stat_activity) either.
  - Everything named is checked first (keys present, files inside the project directory, roles existing); a missing
    one refuses the whole rotation. The new C(.env) and files are staged next to the originals, the role passwords
    committed in one transaction, then the staged files moved into place.
  - O(reset_sql) (for example C(UPDATE users SET must_reset = true)) runs in O(reset_database) afterwards, in one
    transaction; the number of rows it touched is returned.
  - With O(marker), a rotation runs once - the marker (names and time only) is written afterwards and a run that finds it
    changes nothing.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Checks every key, file and role (connecting to the database read-only) and reports what would be rotated.
  diff_mode:
    support: partial
    details:
      - Names what is rotated; values are never shown.
requirements:
  - psycopg2 (C(psycopg2-binary)) on the managed host when O(database_roles) or O(reset_sql) are set.
options:
  project_dir:
    description:
      - The compose project directory.
    type: path
    required: true
  env_file:
    description:
      - The C(.env) file, relative to O(project_dir).
    type: str
    default: .env
  env_keys:
    description:
      - Names of C(.env) variables to give new values.
    type: list
    elements: str
    default: []
  files:
    description:
      - Files (relative to O(project_dir), inside it) whose whole content is a secret to replace. A trailing newline is kept.
    type: list
    elements: str
    default: []
  secret_bytes:
    description:
      - Random bytes in each new value (the value is their URL-safe base64 form).
    type: int
    default: 32
  database_roles:
    description:
      - PostgreSQL roles the stack uses, to give new passwords.
    type: list
    elements: dict
    default: []
    suboptions:
      role:
        description: Role name.
        type: str
        required: true
      env_key:
        description: C(.env) variable that holds the role's password; it receives the new one.
        type: str
  db_host:
    description:
      - Host of the PostgreSQL server (address or socket directory).
    type: str
    default: 127.0.0.1
  db_port:
    description:
      - Port of the PostgreSQL server.
    type: int
    default: 5432
  db_user:
    description:
      - Role that connects (must be allowed to C(ALTER ROLE) the roles, for example C(postgres)).
    type: str
    default: postgres
  db_password:
    description:
      - Password of O(db_user). Defaults to E(PGPASSWORD). See also O(db_password_env_key).
    type: str
  db_password_env_key:
    description:
      - Read the password of O(db_user) from this C(.env) variable (before the rotation) instead of O(db_password).
    type: str
  db_name:
    description:
      - Database the role passwords are changed from.
    type: str
    default: postgres
  reset_sql:
    description:
      - SQL that forces the application's users to reset their passwords; runs after the rotation.
    type: str
  reset_database:
    description:
      - Database O(reset_sql) runs in. Default - O(db_name).
    type: str
  connect_timeout:
    description:
      - Seconds to wait for a database connection.
    type: int
    default: 10
  incident_dir:
    description:
      - Append a timestamped line naming what was rotated to C(steps.log) in this directory.
    type: path
  marker:
    description:
      - File recording that this rotation ran (names and time only). When it exists, nothing is rotated again.
    type: path
"""

EXAMPLES = r"""
- name: Rotate the application's secrets and the database superuser's password
  lastgood.rollback.secret_rotate:
    project_dir: /srv/shop
    env_keys: [SESSION_SECRET, API_TOKEN]
    files: [secrets/jwt.key]
    database_roles:
      - role: postgres
        env_key: POSTGRES_PASSWORD
    db_port: 5432
    db_password_env_key: POSTGRES_PASSWORD
    reset_sql: UPDATE users SET must_reset_password = true
    reset_database: shop
    marker: /var/backups/lastgood/shop/incidents/20261130T120000Z/secrets-rotated.json
"""

RETURN = r"""
rotated:
  description: What received new values (names only).
  returned: always
  type: dict
  contains:
    env_keys:
      description: C(.env) variables.
      type: list
      elements: str
    files:
      description: Files, relative to the project directory.
      type: list
      elements: str
    roles:
      description: Database roles.
      type: list
      elements: str
password_reset_rows:
  description: Rows O(reset_sql) touched (null when it did not run).
  returned: always
  type: int
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.lastgood.rollback.plugins.module_utils._breach import (
    BreachError,
    SecretRotation,
    append_step,
    read_env_value,
    run_reset_sql,
    utc_stamp,
    write_atomic,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import fail_step
from ansible_collections.lastgood.rollback.plugins.module_utils._postgres import (
    APPLICATION_NAME,
    require_psycopg2,
)

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # reported by require_psycopg2
    psycopg2 = None
PG_ERRORS = (psycopg2.Error,) if psycopg2 is not None else ()


def connect(module, params, dbname, password):
    try:
        return psycopg2.connect(host=params["db_host"], port=params["db_port"], user=params["db_user"],
                                password=password, dbname=dbname, connect_timeout=params["connect_timeout"],
                                application_name=APPLICATION_NAME)
    except psycopg2.Error as exc:
        raise BreachError("cannot connect to database %s as %s: %s"
                          % (dbname, params["db_user"], " ".join(str(exc).split())))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project_dir=dict(type="path", required=True),
            env_file=dict(type="str", default=".env"),
            env_keys=dict(type="list", elements="str", default=[], no_log=False),
            files=dict(type="list", elements="str", default=[]),
            secret_bytes=dict(type="int", default=32, no_log=False),
            database_roles=dict(type="list", elements="dict", default=[], options=dict(
                role=dict(type="str", required=True),
                env_key=dict(type="str", no_log=False),
            )),
            db_host=dict(type="str", default="127.0.0.1"),
            db_port=dict(type="int", default=5432),
            db_user=dict(type="str", default="postgres"),
            db_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
            db_password_env_key=dict(type="str", no_log=False),
            db_name=dict(type="str", default="postgres"),
            reset_sql=dict(type="str"),
            reset_database=dict(type="str"),
            connect_timeout=dict(type="int", default=10),
            marker=dict(type="path"),
            incident_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    result = dict(changed=False, rotated=dict(env_keys=[], files=[], roles=[]), password_reset_rows=None, actions=[])
    if params["marker"] and os.path.exists(params["marker"]):
        result["actions"] = ["nothing: the rotation recorded in %s already ran" % params["marker"]]
        module.exit_json(**result)
    if params["secret_bytes"] < 16:
        module.fail_json(msg="secret_bytes must be at least 16, got %d" % params["secret_bytes"])
    uses_db = bool(params["database_roles"] or params["reset_sql"])
    if uses_db:
        require_psycopg2(module)
    conns = []
    try:
        rotation = SecretRotation(params["project_dir"], params["env_file"], params["env_keys"], params["files"],
                                  params["database_roles"], params["secret_bytes"])
        actions = rotation.plan()
        if params["reset_sql"]:
            actions.append("run the password-reset SQL in database %s" % (params["reset_database"] or params["db_name"]))
        marker_dir = os.path.dirname(os.path.abspath(params["marker"])) if params["marker"] else None
        if marker_dir and not (os.path.isdir(marker_dir) and os.access(marker_dir, os.W_OK | os.X_OK)):
            # Without its marker a rerun would rotate everything again: refused before any change.
            raise BreachError("the marker's directory %s is not a writable directory: nothing rotated" % marker_dir)
        password = params["db_password"]
        if uses_db and params["db_password_env_key"]:
            try:
                with open(rotation.env_path, encoding="utf-8") as handle:
                    password = read_env_value(handle.read(), params["db_password_env_key"])
            except OSError as exc:
                raise BreachError("cannot read %s: %s: nothing rotated" % (rotation.env_path, exc.strerror))
            if password is None:
                raise BreachError("%s has no %s" % (rotation.env_path, params["db_password_env_key"]))
        conn = None
        if params["database_roles"]:
            conn = connect(module, params, params["db_name"], password)
            conns.append(conn)
            rotation.check_roles(conn)
        reset_conn = None
        if params["reset_sql"]:
            # Connected before the rotation: the password in hand is the one about to change.
            reset_db = params["reset_database"] or params["db_name"]
            reset_conn = conn if conn is not None and reset_db == params["db_name"] else connect(module, params, reset_db, password)
            conns.append(reset_conn)
        result["actions"] = actions
        result["changed"] = bool(actions)
        if module.check_mode or not actions:
            result["rotated"] = dict(env_keys=sorted(set(params["env_keys"]) | {r["env_key"] for r in params["database_roles"] if r["env_key"]}),
                                     files=list(params["files"]), roles=[r["role"] for r in params["database_roles"]])
            result["diff"] = dict(before={}, after={"rotated": result["rotated"]})
            module.exit_json(**result)

        def encrypt(new_password, role):
            return psycopg2.extensions.encrypt_password(new_password, role, conn, "scram-sha-256")

        result["rotated"] = rotation.rotate(conn, encrypt)
        if reset_conn is not None:
            try:
                result["password_reset_rows"] = run_reset_sql(reset_conn, params["reset_sql"])
            except psycopg2.Error as exc:
                raise BreachError("the password-reset SQL failed (the secrets were rotated): %s"
                                  % " ".join(str(exc).split()), rotated=result["rotated"])
        result["diff"] = dict(before={}, after={"rotated": result["rotated"]})
        try:
            if params["marker"]:
                write_atomic(params["marker"], json.dumps(dict(result["rotated"], rotated_at=utc_stamp(),
                                                               password_reset_rows=result["password_reset_rows"]),
                                                          indent=2, sort_keys=True) + "\n", 0o600)
            if params["incident_dir"]:
                rotated = result["rotated"]
                append_step(params["incident_dir"], "rotated", "env keys %s; files %s; roles %s; password resets %s" % (
                    ",".join(rotated["env_keys"]) or "-", ",".join(rotated["files"]) or "-", ",".join(rotated["roles"]) or "-",
                    "-" if result["password_reset_rows"] is None else result["password_reset_rows"]))
        except OSError as exc:
            raise BreachError("the secrets were rotated, but recording it failed: %s: %s"
                              % (exc.filename, exc.strerror), rotated=result["rotated"])
    except BreachError as exc:
        fail_step(module, exc, changed=bool(exc.result.get("rotated")))
    except PG_ERRORS as exc:
        module.fail_json(msg="rotating the database role passwords failed (nothing changed): %s"
                         % " ".join(str(exc).split()), changed=False)
    finally:
        for each in conns:
            each.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
