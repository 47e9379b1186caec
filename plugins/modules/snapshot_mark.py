#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: snapshot_mark
short_description: Mark a snapshot last known good, or bad so that no rollback lands on it
version_added: 0.1.0
description:
  - O(state=last_known_good) points C(<backup_root>/<project>/last-known-good) at the snapshot, atomically.
    A snapshot marked bad is refused.
  - O(state=bad) writes a C(BAD) marker with a reason into the snapshot; rollbacks refuse it by default.
    When it was the last-known-good snapshot, the pointer is left in place but every reader sees the marker.
  - O(state=unmarked) removes a bad marker.
  - The manifest is verified against its sha256 first; nothing is marked on a damaged snapshot.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.snapshots
  - lastgood.rollback.project.LOOKUP
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - Shows the last-known-good pointer and the bad marker before and after.
options:
  snapshot_id:
    description:
      - The snapshot to mark.
    type: str
    required: true
  state:
    description:
      - What to mark.
    type: str
    choices: [last_known_good, bad, unmarked]
    default: last_known_good
  reason:
    description:
      - Why the snapshot is bad (stored in the marker).
    type: str
"""

EXAMPLES = r"""
- name: Promote the snapshot once the health gate passed
  lastgood.rollback.snapshot_mark:
    project_dir: /srv/shop
    snapshot_id: "{{ snapshot.snapshot_id }}"

- name: Never roll back onto the release that broke production
  lastgood.rollback.snapshot_mark:
    project_name: shop
    snapshot_id: 20261130T084512Z
    state: bad
    reason: health gate failed after deploy
"""

RETURN = r"""
last_known_good:
  description: Id the last-known-good pointer names after the task.
  returned: always
  type: str
previous_last_known_good:
  description: Id the pointer named before the task.
  returned: always
  type: str
bad:
  description: The bad marker after the task, or null.
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    PROJECT_LOOKUP_ARGUMENT_SPEC,
    PROJECT_LOOKUP_REQUIRED_ONE_OF,
    resolve_project_name,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    BAD_MARKER,
    ManifestError,
    last_known_good,
    load_manifest,
    project_root,
    read_bad_marker,
    resolve_snapshot,
    set_last_known_good,
    utc_now,
    write_bad_marker,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **PROJECT_LOOKUP_ARGUMENT_SPEC,
            **BACKUP_ROOT_ARGUMENT_SPEC,
            snapshot_id=dict(type="str", required=True),
            state=dict(type="str", default="last_known_good", choices=["last_known_good", "bad", "unmarked"]),
            reason=dict(type="str"),
        ),
        required_one_of=PROJECT_LOOKUP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params = module.params
    project_name = resolve_project_name(module, params)
    try:
        snapshot_id, path = resolve_snapshot(params["backup_root"], project_name, params["snapshot_id"])
        load_manifest(path)
        root = project_root(params["backup_root"], project_name)
    except ManifestError as exc:
        module.fail_json(msg=str(exc))

    before_lkg = last_known_good(root)
    before_bad = read_bad_marker(path)
    after_lkg, after_bad = before_lkg, before_bad
    state = params["state"]
    if state == "last_known_good":
        if before_bad:
            module.fail_json(msg="snapshot %s is marked bad (%s); unmark it before promoting it"
                             % (snapshot_id, before_bad.get("reason") or "no reason given"))
        after_lkg = snapshot_id
    elif state == "bad" and not before_bad:
        after_bad = {"reason": params["reason"] or "marked bad", "marked_at": None}
    elif state == "unmarked":
        after_bad = None

    changed = (after_lkg != before_lkg) or (bool(after_bad) != bool(before_bad))
    if changed and not module.check_mode:
        if after_lkg != before_lkg:
            set_last_known_good(root, snapshot_id)
        if after_bad and not before_bad:
            write_bad_marker(path, after_bad["reason"], utc_now())
            after_bad = read_bad_marker(path)
        elif before_bad and not after_bad:
            os.unlink(os.path.join(path, BAD_MARKER))

    module.exit_json(
        changed=changed,
        snapshot_id=snapshot_id,
        last_known_good=after_lkg,
        previous_last_known_good=before_lkg,
        bad=after_bad,
        diff=dict(
            before="last-known-good: %s\nbad: %s\n" % (before_lkg, bool(before_bad)),
            after="last-known-good: %s\nbad: %s\n" % (after_lkg, bool(after_bad)),
        ),
    )


if __name__ == "__main__":
    main()
