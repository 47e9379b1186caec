#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: git_revert
short_description: Move a compose project's git work tree back to a snapshot's commit without losing work
version_added: 0.2.0
description:
  - Tier 3 of the rollback (code). With O(state=rolled_back), moves the git work tree that holds O(project_dir)
    to O(target), or to the commit the snapshot O(snapshot_id) recorded (the last known good one by default).
  - Nothing is lost. Before the tree moves, the current commit is recorded under C(refs/lastgood/before-<id>)
    (O(backup_ref_id)) and uncommitted and untracked changes go into a stash named C(lastgood before-<id>)
    (C(git stash push --include-untracked)), which stays in the stash list. Ignored files are left alone.
  - The project's own configuration on the host stays in place when git does not track it - its compose files, the
    C(.env), the services' C(env_file) entries (RV(kept)). A code rollback moves code, not the host's settings;
    stashed, they would leave with the code and the stack would start without them. Only when the target itself
    tracks such a file does the host's copy go into the stash, the target's taking its place. Any other untracked
    file goes into the stash.
  - An untracked override file compose adds by itself (such as C(compose.override.yaml)) stays in place only when a
    snapshot vouches for it, by listing it among the compose files the stack ran with and recording exactly its
    content (sha256) - the target's snapshot, or with O(target) the last known good one - or with O(keep_override).
    The move does not vouch for one someone dropped on the host, or changed since (after a breach it must not stay);
    that one goes into the stash, a warning says compose no longer reads it, and a config or full rollback puts back
    the one the snapshot recorded. An override that links outside the project directory, which a snapshot lists but
    cannot record, stays as it is. The kept file's content is recorded as C(refs/lastgood/kept-<id>/<name>);
    O(state=restored) keeps it while it still has that content, and otherwise stashes the change with the tree's
    other changes and puts the file back as the rollback found it.
  - O(mode=checkout) on a branch resets the branch to the target (C(git reset --hard), only once the backup ref and
    the stash exist); on a detached HEAD it checks the target out detached. O(mode=revert) adds revert commits for
    every commit on top of the target (C(git revert --no-edit <target>..HEAD)), keeping the history; it needs a branch
    and a target that is an ancestor of HEAD, and refuses merge commits in the range. A revert that fails is aborted
    and the tree put back where it was, the stash popped.
  - Refused with one line and nothing changed - a target that is not a commit (in a shallow clone, the message says
    to fetch the history), revert mode on a detached HEAD, a dirty tree with O(stash=false) whose changes the move would
    touch, a backup ref of the same id that already names another commit, and, with O(state=rolled_back) or
    O(state=restored), another live run holding the project's lock under O(backup_root) (see O(holder)).
  - Also returns the compose services built from source (C(build:)) and those whose build context holds a file the
    move changes, so that a caller rebuilds exactly those.
  - O(state=restored) returns the tree to C(refs/lastgood/before-<id>) and pops the stash C(lastgood before-<id>); what
    the tree holds at that moment is kept too (C(refs/lastgood/after-<id>) for commits not reachable from the backup,
    a stash C(lastgood after-<id>) for uncommitted changes).
  - O(state=tagged) tags HEAD C(lastgood/good-<UTC YYYYmmddTHHMMSSZ>) (or O(tag)) unless a C(lastgood/good-*) tag
    already points at it.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.lock
  - lastgood.rollback.snapshots
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Performs every verification and returns the real plan - the commits that would be left or reverted, the files
        that would change, what would be stashed, the backup ref - and changes nothing.
  diff_mode:
    support: full
    details:
      - Shows HEAD (commit, branch) and the uncommitted paths before, and the commit and changed files after.
options:
  project_dir:
    description:
      - The compose project directory, inside the git work tree to move. Git runs as C(git -C <project_dir>).
    type: path
    required: true
    aliases: [repo_dir]
  files:
    description:
      - Compose files, relative to O(project_dir). Default - what C(docker compose) picks.
    type: list
    elements: str
  project_name:
    description:
      - Compose project name (finds the snapshots). Default - what C(docker compose) would use.
    type: str
  state:
    description:
      - V(rolled_back) moves the tree to the target, V(restored) returns it to the backup ref O(backup_ref_id),
        V(tagged) tags HEAD as known good.
    type: str
    choices: [rolled_back, restored, tagged]
    default: rolled_back
  target:
    description:
      - Commit, tag or branch to move to. When omitted, the commit recorded in the snapshot O(snapshot_id).
    type: str
  snapshot_id:
    description:
      - Snapshot whose recorded commit (C(manifest.git.commit)) is the target when O(target) is omitted.
        Defaults to the last-known-good snapshot.
    type: str
  keep_override:
    description:
      - Keep the untracked override file compose adds by itself in place whatever its content - the caller vouches for
        it, as a deploy does that has just recorded it in its snapshot. Without it, only a snapshot can vouch for the
        override.
    type: bool
    default: false
  mode:
    description:
      - V(checkout) puts the branch (or a detached HEAD) at the target; V(revert) adds revert commits, history kept.
    type: str
    choices: [checkout, revert]
    default: checkout
  backup_ref_id:
    description:
      - The C(<id>) of C(refs/lastgood/before-<id>) and of the stash C(lastgood before-<id>). Default - the current
        UTC time, C(YYYYmmddTHHMMSSZ), with C(-2), C(-3)... added when a move in the same second took it.
        Required with O(state=restored).
      - Run again with the same id after an interruption, when the tree is already at the target, the module finds
        the move that id made (its backup ref) and returns what it moved in RV(services_to_rebuild) again
        (RV(resumed)), so that a rebuild the interruption prevented is not skipped.
    type: str
  stash:
    description:
      - Stash uncommitted and untracked changes before the move. With V(false), a dirty tree is refused when the move
        would touch its changes (in checkout mode on a branch, whenever the tree is dirty). The project's untracked
        configuration files left in place (RV(kept)) do not count as changes here.
    type: bool
    default: true
  tag:
    description:
      - With O(state=tagged), the tag name. Default - C(lastgood/good-<UTC YYYYmmddTHHMMSSZ>), with C(-2), C(-3)... added
        when a tag of another commit in the same second took it.
    type: str
requirements:
  - git on the managed host.
  - Docker Engine with the C(docker compose) v2 CLI plugin (reads the project's configuration), with O(state=rolled_back).
notes:
  - A second run at the target changes nothing (checkout - HEAD is the target and the tree clean; revert - HEAD's tree
    is the target's).
seealso:
  - module: lastgood.rollback.snapshot_create
"""

EXAMPLES = r"""
- name: Move the code back to the last known good snapshot's commit
  lastgood.rollback.git_revert:
    project_dir: /srv/shop
  register: code

- name: Revert the commits since a release tag, keeping the history
  lastgood.rollback.git_revert:
    project_dir: /srv/shop
    target: v1.4.2
    mode: revert
    backup_ref_id: before-hotfix

- name: Rebuild what changed
  ansible.builtin.command:
    argv: "{{ ['docker', 'compose', 'build', '--'] + code.services_to_rebuild }}"
    chdir: /srv/shop
  environment:
    DOCKER_BUILDKIT: "0"
  when: code.services_to_rebuild | length > 0
  changed_when: true

- name: Return the tree to where it was
  lastgood.rollback.git_revert:
    project_dir: /srv/shop
    state: restored
    backup_ref_id: "{{ code.backup_ref_id }}"

- name: Tag the code that passed the gate
  lastgood.rollback.git_revert:
    project_dir: /srv/shop
    state: tagged
"""

RETURN = r"""
state:
  description: The requested state.
  returned: always
  type: str
toplevel:
  description: The top level of the git work tree.
  returned: always
  type: str
snapshot_id:
  description: The snapshot whose commit was the target, else null.
  returned: always
  type: str
project_name:
  description: The compose project name, when it was resolved (O(state=rolled_back) and O(state=restored); null
    when compose could not read the project to be restored, which is then restored without the lock's guard).
  returned: when O(state=rolled_back) or O(state=restored)
  type: str
mode:
  description: The mode used.
  returned: always
  type: str
target:
  description: The commit the tree moves to (the backup's commit with O(state=restored), HEAD with O(state=tagged)).
  returned: always
  type: str
before:
  description: HEAD before - C(commit), C(branch) (null when detached), C(dirty).
  returned: always
  type: dict
after:
  description: C(commit) and C(branch) after (in check mode the planned commit; null for revert commits not yet made).
  returned: always
  type: dict
backup_ref:
  description: C(refs/lastgood/before-<id>), recorded at the commit before the move.
  returned: when O(state) is not V(tagged)
  type: str
backup_ref_id:
  description: The C(<id>) used.
  returned: when O(state) is not V(tagged)
  type: str
stash:
  description: The stash made (C(ref) as C(stash@{n}) at that moment, C(commit), C(message)), or null.
    With O(state=restored), the stash popped.
  returned: always
  type: dict
  sample: {ref: "stash@{0}", commit: 9c1f..., message: lastgood before-20261130T101500Z}
uncommitted:
  description: C(git status --porcelain) lines of the uncommitted and untracked changes before, that the stash takes.
  returned: always
  type: list
  elements: str
kept:
  description: >-
    The project's untracked configuration files left in place (paths relative to the top level of the work tree),
    not stashed - also the override file a snapshot or O(keep_override) vouched for, and the file it links to.
  returned: with O(state=rolled_back) or O(state=restored)
  type: list
  elements: str
  sample: [".env", "config/app.env"]
commits:
  description: C(<short> <subject>) of the commits left (checkout) or reverted (revert), newest first.
  returned: always
  type: list
  elements: str
files:
  description: C(<status> <path>) of the files the move changes (paths relative to the top level).
  returned: always
  type: list
  elements: str
services_from_source:
  description: Compose services with a C(build:) section.
  returned: when O(state=rolled_back)
  type: list
  elements: str
services_to_rebuild:
  description:
    - Services built from source whose build context (or Dockerfile) holds a changed or stashed file.
    - With RV(resumed), those of the move an interrupted run of the same O(backup_ref_id) made.
  returned: when O(state=rolled_back)
  type: list
  elements: str
resumed:
  description: The tree was already at the target, moved there by an earlier run with the same O(backup_ref_id).
  returned: when O(state=rolled_back)
  type: bool
tag:
  description: With O(state=tagged), the tag at HEAD (the existing C(lastgood/good-*) one when unchanged).
  returned: when O(state=tagged)
  type: str
actions:
  description: Human-readable list of what was (or would be) done.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lastgood.rollback.plugins.module_utils import _git
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import ComposeError, ComposeProject, resolve_inside
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import fail_step
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import (
    BACKUP_ROOT_ARGUMENT_SPEC,
    ManifestError,
    compact_timestamp,
    load_verified_snapshot,
    sha256_file,
    utc_now,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._orchestrate import HOLDER_ARGUMENT_SPEC, lock_for_module


def diff_text(commit, branch, lines, title):
    text = "HEAD: %s%s\n" % (commit or "(new revert commits)", " on %s" % branch if branch else " (detached)")
    if lines:
        text += "%s:\n%s" % (title, "".join("  %s\n" % line for line in lines))
    return text


def snapshot_target(module, project, params):
    """(snapshot id, recorded commit, manifest) of the requested snapshot."""
    try:
        snapshot_id, _directory, manifest = load_verified_snapshot(params["backup_root"], project.name,
                                                                   params["snapshot_id"], check_files=False)
    except ManifestError as exc:
        module.fail_json(msg=str(exc))
    recorded = manifest.get("git") or {}
    commit = recorded.get("commit")
    if recorded.get("dirty"):
        module.warn("snapshot %s was taken from a work tree with uncommitted changes; they are not part of commit %s"
                    % (snapshot_id, _git.short(commit)))
    if not commit:
        module.fail_json(msg="snapshot %s recorded no git commit (the project was not in a git work tree)" % snapshot_id,
                         snapshot_id=snapshot_id)
    return snapshot_id, commit, manifest


def last_good_manifest(backup_root, project_name):
    """The last known good snapshot's manifest, which vouches for the override file on a move to a
    named target (such as back to refs/lastgood/before-<id>), or None."""
    try:
        return load_verified_snapshot(backup_root, project_name, None, check_files=False)[2]
    except ManifestError:
        return None


def vouched_override(project, manifest, trusted):
    """(name, path inside the project) of the override file compose adds by itself when it stays in
    place while the code moves, else None: `trusted` (O(keep_override)), or the snapshot recorded
    exactly its content among the compose files it ran with."""
    base = os.path.realpath(project.project_dir)
    for name in project.override_files():
        inside = resolve_inside(base, name)
        in_use = ((manifest or {}).get("project") or {}).get("compose_files") or []
        if trusted or (inside is None and name in in_use):
            # One linking outside is host configuration kept elsewhere, used as it is (as config_restore
            # does): the link stays, what it links to is not the tree's.
            return name, inside or name
        recorded = ((manifest or {}).get("files") or {}).get(inside) if inside in in_use else None
        try:
            if recorded and recorded.get("sha256") == sha256_file(os.path.join(base, inside)):
                return name, inside
        except OSError:  # unreadable: nothing to vouch for
            pass
    return None


def override_paths(repo, project, vouched):
    """The work tree paths (from the top level) a vouched override keeps in place: the file, and what
    it links to, if that is another file in the tree (stashed, it would leave the link dangling)."""
    return sorted(set(top_paths(repo, project, list(dict.fromkeys(vouched))))) if vouched else []


def rolled_back(module, repo, params, stamp):
    project = ComposeProject(module, params["project_dir"], params["files"], params["project_name"])
    try:
        project.config()
    except ComposeError as exc:
        fail_step(module, exc)
    lock_for_module(module, params["backup_root"], project.name, "git_revert")
    snapshot_id = manifest = None
    target = params["target"]
    label = target
    if not target:
        snapshot_id, target, manifest = snapshot_target(module, project, params)
        label = "%s (snapshot %s)" % (_git.short(target), snapshot_id)
    if manifest is None and project.override_files():
        manifest = last_good_manifest(params["backup_root"], project.name)
    vouched = vouched_override(project, manifest, params["keep_override"])
    kept_override = override_paths(repo, project, vouched)
    backup_id = params["backup_ref_id"] or _git.free_id(repo, _git.BACKUP_REF_PREFIX, stamp)
    plan = _git.plan_rollback(repo, target, params["mode"], params["stash"], backup_id, target_label=label,
                              keep=host_paths(repo, project) + kept_override)
    warn_stashed_override(module, repo, project, plan, snapshot_id or (manifest or {}).get("id"))
    recorded = []
    if plan["changed"] and set(kept_override) & set(plan["kept"]):
        # Before the move: the way back keeps the file only while it has this content.
        recorded = _git.record_kept(repo, backup_id, os.path.join(os.path.realpath(project.project_dir), vouched[0]),
                                    module.check_mode)
    after, stash, actions = _git.apply_rollback(repo, plan, module.check_mode)
    actions = recorded + actions
    touched = _git.paths_of(plan["files"]) + _git.paths_of(plan["uncommitted"])
    services = project.services
    compose_paths = set(project.compose_files()) | {".env"}
    if plan["changed"] and not module.check_mode and touched:
        # The compose files may differ at the target: read the configuration the target has.
        project_rel = {_rel(repo.toplevel, project.project_dir, path) for path in _git.paths_of(plan["files"])}
        if project_rel & compose_paths:
            project = ComposeProject(module, params["project_dir"], params["files"], project.name)
            try:
                services = project.services
            except ComposeError as exc:
                fail_step(module, exc, changed=True, actions=actions, backup_ref=plan["backup_ref"], stash=stash,
                          project_name=project.requested_name)
    built, affected = _git.source_services(project.project_dir, services, touched, repo.toplevel)
    result = dict(
        changed=plan["changed"],
        snapshot_id=snapshot_id,
        project_name=project.name,
        target=plan["target"],
        target_ref=plan["target_ref"],
        before=plan["before"],
        after={"commit": after, "branch": plan["before"]["branch"]},
        backup_ref=plan["backup_ref"],
        backup_ref_id=backup_id,
        stash=stash if not module.check_mode else (
            {"ref": None, "commit": None, "message": plan["stash_message"]} if plan["stash_wanted"] else None),
        uncommitted=plan["uncommitted"],
        kept=plan["kept"],
        commits=plan["commits"],
        files=plan["files"],
        services_from_source=built,
        services_to_rebuild=affected if (plan["changed"] or plan["resumed"]) else [],
        resumed=plan["resumed"],
        actions=actions,
    )
    result["diff"] = dict(
        before=diff_text(plan["before"]["commit"], plan["before"]["branch"], plan["uncommitted"], "uncommitted"),
        after=diff_text(after, plan["before"]["branch"], plan["files"], "files changed"),
    )
    return result


def _rel(toplevel, project_dir, path):
    return os.path.relpath(os.path.join(toplevel, path), project_dir)


def host_paths(repo, project):
    """The project's own configuration on this host (ComposeProject.host_files), relative to the
    work tree's top level: what stays in place, untracked, while the code moves."""
    # Not an override file compose adds by itself: the move does not vouch for one someone dropped
    # on the host (after a breach it must not stay), only a snapshot that recorded it (vouched_override).
    return top_paths(repo, project, project.host_files(with_override=False))


def warn_stashed_override(module, repo, project, plan, snapshot_id):
    """Say so when the untracked override file compose adds goes into the stash and the target brings
    none in its place: the stack starts without it."""
    untracked = {path for line in plan["uncommitted"] for code, path in [line.split(" ", 1)] if code == "??"}
    stashed = untracked - set(_git.paths_of(plan["files"])) if plan["stash_wanted"] else set()
    base = os.path.realpath(project.project_dir)
    for name in project.override_files():
        if not set(top_paths(repo, project, [name])) & stashed:
            continue
        if snapshot_id and resolve_inside(base, name) is None:
            why = "it links outside the project directory and snapshot %s did not list it" % snapshot_id
        elif snapshot_id:
            why = "snapshot %s did not record this content" % snapshot_id
        else:
            why = "no snapshot vouches for it"
        module.warn("%s %s into the stash with the untracked work, and compose no longer reads it: %s"
                    % (name, "would go" if module.check_mode else "goes", why))


def top_paths(repo, project, names):
    """`names` (relative to the project directory) relative to the work tree's top level, those inside it."""
    top = os.path.realpath(repo.toplevel)
    paths = []
    for name in names:
        # The directory resolved, not the file: git reports a symlinked .env as the link.
        full = os.path.join(project.project_dir, name)
        path = os.path.relpath(os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full)), top)
        if not path.startswith(".."):
            paths.append(path)
    return paths


def restored(module, repo, params):
    if not params["backup_ref_id"]:
        module.fail_json(msg="state=restored needs backup_ref_id (the <id> of refs/lastgood/before-<id>)")
    project_name = lock_for_restore(module, params)
    project = ComposeProject(module, params["project_dir"], params["files"], project_name)
    kept, put_back = override_at_restore(repo, project, params["backup_ref_id"])
    plan = _git.plan_restore(repo, params["backup_ref_id"], keep=host_paths(repo, project) + kept)
    changed_one = bool(put_back) and os.path.lexists(put_back[0])  # else gone: nothing of it to stash
    after, actions = _git.apply_restore(repo, plan, module.check_mode)
    if put_back and plan["changed"]:
        path, blob = put_back
        name = os.path.basename(path)
        actions.append("put %s back as the rollback kept it" % name)
        change = ("the changed one %s into the stash '%s'" % ("would go" if module.check_mode else "went",
                                                              plan["after_stash_message"])
                  if changed_one else "it was gone")
        module.warn("%s changed after the rollback kept it in place (%s): it comes back as the rollback found it"
                    % (name, change))
        if not module.check_mode:
            _git.write_blob(repo, blob, path)
    return dict(
        changed=plan["changed"],
        snapshot_id=None,
        project_name=project_name,
        target=plan["target"],
        before=plan["before"],
        after={"commit": after, "branch": plan["before"]["branch"]},
        backup_ref=plan["backup_ref"],
        backup_ref_id=params["backup_ref_id"],
        after_ref=plan["after_ref"],
        stash=plan["stash"],
        uncommitted=plan["uncommitted"],
        kept=plan["kept"],
        commits=plan["commits"],
        files=plan["files"],
        actions=actions,
        diff=dict(
            before=diff_text(plan["before"]["commit"], plan["before"]["branch"], plan["uncommitted"], "uncommitted"),
            after=diff_text(after, plan["before"]["branch"], plan["files"], "files changed"),
        ),
    )


def override_at_restore(repo, project, backup_id):
    """([paths the way back keeps], (path, blob) to put back or None) for the override file the rollback
    kept in place (refs/lastgood/kept-<id>/<name>). Unchanged, it stays. Dropped or changed since, the
    change goes into the after stash with the tree's other changes, and the file comes back with the
    content the rollback found. Any other override is the tree's like any untracked file."""
    name, blob = _git.kept_file(repo, backup_id)
    if name is None:
        return [], None
    base = os.path.realpath(project.project_dir)
    path = os.path.join(base, name)
    if os.path.isfile(path) and repo.value(["hash-object", "--", path]) == blob:
        return override_paths(repo, project, (name, resolve_inside(base, name) or name)), None
    return [], (path, blob)


def lock_for_restore(module, params):
    """The undo step moves the tree as much as the rollback did: the same guard, under the project's
    name (O(project_name), else the one compose resolves). A tree compose cannot read, which the undo
    may be there to mend, is not a reason to keep it broken: a warning, and the tree goes back
    without the guard. Returns the name, or None."""
    name = params["project_name"]
    if not name:
        try:
            name = ComposeProject(module, params["project_dir"], params["files"], None).name
        except ComposeError as exc:
            module.warn("returning the tree without checking the project's lock: docker compose cannot read the"
                        " project (%s); give project_name" % exc.msg)
            return None
    lock_for_module(module, params["backup_root"], name, "git_revert")
    return name


def tagged(module, repo, params, stamp):
    tags = "refs/tags/" + _git.GOOD_TAG_PREFIX
    plan = _git.plan_tag(repo, params["tag"] or _git.good_tag_name(_git.free_id(repo, tags, stamp, reuse_at_head=True)))
    actions = _git.apply_tag(repo, plan, module.check_mode)
    return dict(
        changed=plan["changed"],
        snapshot_id=None,
        target=plan["commit"],
        before={"commit": plan["commit"], "branch": repo.branch(), "dirty": None},
        after={"commit": plan["commit"], "branch": repo.branch()},
        tag=plan["tag"],
        stash=None,
        uncommitted=[],
        commits=[],
        files=[],
        actions=actions,
        diff=dict(before="", after="tag %s -> %s\n" % (plan["tag"], plan["commit"]) if plan["changed"] else ""),
    )


def main():
    argument_spec = dict(
        project_dir=dict(type="path", required=True, aliases=["repo_dir"]),
        files=dict(type="list", elements="str"),
        project_name=dict(type="str"),
        state=dict(type="str", choices=["rolled_back", "restored", "tagged"], default="rolled_back"),
        target=dict(type="str"),
        snapshot_id=dict(type="str"),
        keep_override=dict(type="bool", default=False),
        mode=dict(type="str", choices=list(_git.MODES), default="checkout"),
        backup_ref_id=dict(type="str"),
        stash=dict(type="bool", default=True),
        tag=dict(type="str"),
        **BACKUP_ROOT_ARGUMENT_SPEC,
        **HOLDER_ARGUMENT_SPEC,
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[("target", "snapshot_id")])
    params = module.params
    stamp = compact_timestamp(utc_now())
    try:
        repo = _git.Repo(module, params["project_dir"])
        if params["state"] == "restored":
            result = restored(module, repo, params)
        elif params["state"] == "tagged":
            result = tagged(module, repo, params, stamp)
        else:
            result = rolled_back(module, repo, params, stamp)
    except _git.GitError as exc:
        fail_step(module, exc)
    result.update(state=params["state"], mode=params["mode"], toplevel=repo.toplevel)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
