# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""git, run as argument lists: the state a snapshot records, and the code rollback (tier 3).

Every command is `git -C <directory> ...` through module.run_command, never a shell. The rollback
never loses work: before the work tree moves, the current commit is kept under
``refs/lastgood/before-<id>`` and uncommitted and untracked changes go into a stash named
``lastgood before-<id>``; the tree only moves once both exist.
"""

from __future__ import annotations

import os
import re

from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError

BACKUP_REF_PREFIX = "refs/lastgood/before-"
AFTER_REF_PREFIX = "refs/lastgood/after-"
# The content of an untracked file a rollback kept in place (the override file), as a blob.
KEPT_REF_PREFIX = "refs/lastgood/kept-"
GOOD_TAG_PREFIX = "lastgood/good-"
STASH_MESSAGE_PREFIX = "lastgood before-"
MODES = ("checkout", "revert")
# Used for the commits a rollback makes (stash, revert) when the repository has no identity.
FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "lastgood.rollback",
    "GIT_AUTHOR_EMAIL": "lastgood@localhost",
    "GIT_COMMITTER_NAME": "lastgood.rollback",
    "GIT_COMMITTER_EMAIL": "lastgood@localhost",
}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def git_state(module, directory, recorded=()):
    """{commit, branch, dirty, toplevel} of the work tree holding `directory`, or None.

    recorded: paths relative to `directory` kept elsewhere (a snapshot's copies), which do not make
    the tree dirty while untracked; an edited tracked file does."""
    git = module.get_bin_path("git")
    if git is None:
        return None

    def run(*args):
        rc, out, _err = module.run_command([git, "-C", directory] + list(args))
        return out.strip() if rc == 0 else None

    toplevel = run("rev-parse", "--show-toplevel")
    if toplevel is None:
        return None
    commit = run("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if commit is None:  # a repository without commits has nothing to return to
        return None
    branch = run("symbolic-ref", "--quiet", "--short", "HEAD")
    rc, status, _err = module.run_command([git, "-C", directory, "status", "--porcelain=v1", "-z", "--untracked-files=all"])
    top, base = os.path.realpath(toplevel), os.path.realpath(directory)
    kept = {os.path.relpath(os.path.join(base, rel), top) for rel in recorded}
    changes = [path for code, path, _source in parse_status_z(status) if code != "??" or path not in kept] if rc == 0 else []
    return {
        "commit": commit,
        "branch": branch or None,
        "dirty": bool(changes),
        "toplevel": toplevel,
    }


class GitError(StepError):
    """A refused or failed git step; `result` carries cmd, rc, stdout and stderr where a command failed."""


def _last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def check_id(value, what="backup_ref_id"):
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or ".." in value or value.endswith(".lock"):
        raise GitError("%s %r is not a safe name (letters, digits, '.', '_', '-'; no '..')" % (what, value))
    return value


def short(commit):
    return (commit or "none")[:12]


class Repo:
    """One git work tree, addressed through a directory inside it."""

    def __init__(self, module, directory):
        self.module = module
        self.directory = directory
        self.git = module.get_bin_path("git")
        if self.git is None:
            raise GitError("git is not installed on the managed host")
        if not os.path.isdir(directory):
            raise GitError("directory %s does not exist" % directory)
        rc, out, _err = self.run_raw(["rev-parse", "--show-toplevel"])
        if rc != 0:
            raise GitError("%s is not inside a git work tree" % directory)
        self.toplevel = out.strip()
        self._identity = None

    # -- running git ---------------------------------------------------------------------
    def command(self, args):
        return [self.git, "-C", self.directory] + list(args)

    def run_raw(self, args, env=None):
        return self.module.run_command(self.command(args), environ_update=env)

    def run(self, args, what=None, env=None):
        """Run a git command that must succeed; GitError with its last error line otherwise."""
        rc, out, err = self.run_raw(args, env=env)
        if rc != 0:
            raise GitError("git %s failed: %s" % (what or args[0], _last_line(err or out)),
                           cmd=self.command(args), rc=rc, stdout=out, stderr=err)
        return out

    def value(self, args):
        """Stripped stdout of a command, or None when it fails."""
        rc, out, _err = self.run_raw(args)
        return out.strip() if rc == 0 else None

    def identity_env(self):
        """Author/committer for the commits a rollback makes, when the repository has none of its own."""
        if self._identity is None:
            has_name = self.value(["config", "user.name"])
            has_email = self.value(["config", "user.email"])
            self._identity = {} if (has_name and has_email) else dict(FALLBACK_IDENTITY)
        return self._identity or None

    # -- reading -------------------------------------------------------------------------
    def resolve(self, ref):
        """The commit a ref names, or None. Names starting with '-' are refused (no option injection)."""
        if not ref or ref.startswith("-"):
            return None
        return self.value(["rev-parse", "--verify", "--quiet", "%s^{commit}" % ref])

    def head(self):
        commit = self.resolve("HEAD")
        if commit is None:
            raise GitError("the repository in %s has no commit" % self.toplevel)
        return commit

    def branch(self):
        return self.value(["symbolic-ref", "--quiet", "--short", "HEAD"]) or None

    def is_shallow(self):
        return self.value(["rev-parse", "--is-shallow-repository"]) == "true"

    def is_ancestor(self, ancestor, descendant):
        rc, _out, _err = self.run_raw(["merge-base", "--is-ancestor", ancestor, descendant])
        return rc == 0

    def status(self):
        """[(XY code, path)] of uncommitted and untracked changes (ignored files are not work)."""
        out = self.run(["status", "--porcelain=v1", "-z", "--untracked-files=all"], what="status")
        entries = []
        for code, path, source in parse_status_z(out):
            entries.append((code, path))
            if source is not None:
                entries.append((code, source))
        return entries

    def commits(self, revision_range):
        """["<short> <subject>"] of a range, newest first."""
        out = self.run(["log", "--no-decorate", "--format=%h %s", revision_range, "--"], what="log")
        return [line for line in out.splitlines() if line]

    def merges(self, revision_range):
        out = self.run(["rev-list", "--merges", revision_range, "--"], what="rev-list")
        return [line for line in out.splitlines() if line]

    def changed_files(self, old, new):
        """["<status> <path>"] between two commits (paths relative to the top level)."""
        out = self.run(["diff", "--name-status", "--no-renames", "-z", old, new, "--"], what="diff")
        fields = [f for f in out.split("\0") if f]
        return ["%s %s" % (fields[i], fields[i + 1]) for i in range(0, len(fields) - 1, 2)]

    def same_tree(self, old, new):
        rc, _out, _err = self.run_raw(["diff", "--quiet", old, new, "--"])
        return rc == 0

    def ref_commit(self, ref):
        return self.value(["rev-parse", "--verify", "--quiet", ref + "^{commit}"])

    def stash_entries(self):
        """[(stash@{n}, commit, subject)] newest first."""
        rc, out, _err = self.run_raw(["stash", "list", "--format=%gd%x00%H%x00%gs"])
        if rc != 0:
            return []
        entries = []
        for line in out.splitlines():
            parts = line.split("\0")
            if len(parts) == 3:
                entries.append(tuple(parts))
        return entries

    def find_stash(self, message):
        """(stash@{n}, commit) of the newest stash whose message is `message`, or None."""
        for selector, commit, subject in self.stash_entries():
            if subject == message or subject.endswith(": " + message):
                return selector, commit
        return None

    def tags_at(self, commit, prefix):
        out = self.value(["tag", "--list", "--points-at", commit, prefix + "*"]) or ""
        return sorted(line for line in out.splitlines() if line)


def parse_status_z(out):
    """[(XY code, path, source path of a rename or copy or None)] from `git status --porcelain=v1 -z`."""
    fields = out.split("\0")
    entries = []
    index = 0
    while index < len(fields):
        field = fields[index]
        index += 1
        if len(field) < 4:
            continue
        source = None
        if field[0] in "RC" and index < len(fields):  # a rename or copy is followed by its source path
            source = fields[index]
            index += 1
        entries.append((field[:2], field[3:], source))
    return entries


def status_lines(entries):
    return ["%s %s" % (code.strip() or code, path) for code, path in entries]


def paths_of(files):
    """Paths of "<status> <path>" lines."""
    return [line.split(" ", 1)[1] for line in files]


# -- tier 3: the plan, the move, the way back --------------------------------------------------

def free_id(repo, ref_prefix, stamp, reuse_at_head=False):
    """A default name's id: `stamp` (UTC seconds), or `stamp`-2, -3... when a move or tag in the same
    second took it. With `reuse_at_head`, an id whose ref is at HEAD is free (a good tag: plan_tag
    reuses it); a backup id never is, its stash and kept refs are another move's."""
    head = repo.head() if reuse_at_head else None
    candidate, counter = stamp, 1
    while repo.ref_commit(ref_prefix + candidate) not in (None, head):
        counter += 1
        candidate = "%s-%d" % (stamp, counter)
    return candidate


def plan_rollback(repo, target, mode, stash, backup_id, target_label=None, keep=()):
    """Everything a rollback to `target` would do, verified before anything changes.

    keep: paths (relative to the top level) that stay in the work tree while untracked and not in
    the move: the host's own compose configuration (.env, env files, compose files). Stashed,
    they would leave with the code and the stack would start without its settings.

    Raises GitError with one line for every refusal: unknown or missing target (also in a shallow
    clone), detached HEAD in revert mode, merges in the reverted range, a dirty tree without stash
    whose changes the move would touch, an existing backup ref of the same id.
    """
    label = target_label or target
    if mode not in MODES:
        raise GitError("mode must be one of %s, not %s" % (", ".join(MODES), mode))
    check_id(backup_id)
    head = repo.head()
    branch = repo.branch()
    wanted = repo.resolve(target)
    if wanted is None:
        if repo.is_shallow():
            raise GitError("shallow clone lacks %s: fetch the history first (git -C %s fetch --unshallow), nothing changed"
                           % (label, repo.toplevel))
        raise GitError("target %s is not a commit in %s, nothing changed" % (label, repo.toplevel))

    entries = repo.status()
    if mode == "checkout":
        at_target = head == wanted
        leaving = repo.commits("%s..%s" % (wanted, head)) if not at_target else []
    else:
        if branch is None:
            raise GitError("HEAD is detached at %s: revert mode adds commits to a branch; check out the branch first"
                           " or use mode=checkout, nothing changed" % short(head))
        if not repo.is_ancestor(wanted, head):
            raise GitError("%s (%s) is not an ancestor of HEAD (%s on %s): revert mode can only undo the commits on top"
                           " of it; use mode=checkout, nothing changed" % (label, short(wanted), short(head), branch))
        at_target = repo.same_tree(wanted, head)
        leaving = [] if at_target else repo.commits("%s..%s" % (wanted, head))
        merges = [] if at_target else repo.merges("%s..%s" % (wanted, head))
        if merges:
            raise GitError("revert mode cannot undo merge commits (%s); use mode=checkout, nothing changed"
                           % ", ".join(short(m) for m in merges))
    files = [] if at_target else repo.changed_files(head, wanted)
    entries, kept = kept_in_place(entries, keep, files)
    dirty = bool(entries)

    if dirty and not stash:
        touched = set(paths_of(files))
        conflicting = sorted({path for _code, path in entries if path in touched})
        if mode == "checkout" and branch is not None and not at_target:
            # `git reset --keep` would carry them, but a rollback deploys the target's exact code.
            conflicting = conflicting or sorted({path for _code, path in entries})
        if conflicting:
            raise GitError("the work tree has uncommitted changes the rollback would touch (%s): commit them or use"
                           " stash=true, nothing changed" % ", ".join(conflicting))

    backup_ref = BACKUP_REF_PREFIX + backup_id
    changed = not at_target or (dirty and stash)
    existing = repo.ref_commit(backup_ref)
    taken = existing is not None and existing != head  # this id's backup ref names another commit
    if changed and taken:
        if at_target:
            # Resuming an interrupted move of this id, with new changes in the tree: say which.
            paths = sorted(path for _code, path in entries)
            shown = ", ".join(paths[:5]) + (" and %d more" % (len(paths) - 5) if len(paths) > 5 else "")
            raise GitError("the tree is at %s already and backup ref %s names another commit (an interrupted move of this"
                           " id), but the tree has changed since (%s): a resumed run only rebuilds; commit or stash those"
                           " changes, or choose another backup_ref_id, nothing changed" % (label, backup_ref, shown))
        raise GitError("backup ref %s already exists (at %s); choose another backup_ref_id, nothing changed"
                       % (backup_ref, short(existing)))
    # At the target, with this id's backup ref elsewhere: the move was made by a run of the same id
    # that was interrupted; what it moved is what still has to be rebuilt.
    resumed = at_target and taken
    if resumed:
        files = repo.changed_files(existing, wanted)
    return {
        "target": wanted,
        "target_ref": label,
        "mode": mode,
        "before": {"commit": head, "branch": branch, "dirty": dirty},
        "uncommitted": status_lines(entries),
        "kept": kept,
        "stash_wanted": bool(dirty and stash),
        "stash_message": STASH_MESSAGE_PREFIX + backup_id,
        "backup_ref": backup_ref,
        "backup_exists": existing == head,
        "commits": leaving,
        "files": files,
        "changed": changed,
        "at_target": at_target,
        "resumed": resumed,
    }


def apply_rollback(repo, plan, check_mode):
    """Move the work tree as planned; returns (after commit, stash dict or None, actions).

    Order: backup ref, stash, move. A failed revert is aborted and the tree put back where it was.
    """
    actions = []
    head = plan["before"]["commit"]
    branch = plan["before"]["branch"]
    wanted = plan["target"]
    if not plan["changed"]:
        return head, None, actions
    if not plan["backup_exists"]:
        actions.append("record %s at %s" % (plan["backup_ref"], short(head)))
    if plan["stash_wanted"]:
        actions.append("stash %d uncommitted/untracked path(s) as '%s'" % (len(plan["uncommitted"]), plan["stash_message"]))
    if not plan["at_target"]:
        if plan["mode"] == "revert":
            actions.append("revert %d commit(s) on %s (%s..%s)" % (len(plan["commits"]), branch, short(wanted), short(head)))
        elif branch:
            actions.append("reset branch %s from %s to %s" % (branch, short(head), short(wanted)))
        else:
            actions.append("check out %s (detached HEAD) instead of %s" % (short(wanted), short(head)))
    if check_mode:
        return (wanted if plan["mode"] == "checkout" else None), None, actions

    if not plan["backup_exists"]:
        repo.run(["update-ref", "-m", "lastgood: before rollback", plan["backup_ref"], head, ""], what="update-ref")
    stash = None
    if plan["stash_wanted"]:
        repo.run(stash_push_args(plan["stash_message"], plan["kept"]), what="stash push", env=repo.identity_env())
        found = repo.find_stash(plan["stash_message"])
        if found is None or [path for _code, path in repo.status() if path not in plan["kept"]]:
            raise GitError("stashing the uncommitted changes did not leave a clean tree; nothing else changed",
                           backup_ref=plan["backup_ref"])
        stash = {"ref": found[0], "commit": found[1], "message": plan["stash_message"]}
    if plan["at_target"]:
        return head, stash, actions
    try:
        if plan["mode"] == "revert":
            repo.run(["revert", "--no-edit", "%s..%s" % (wanted, head)], what="revert", env=repo.identity_env())
        elif branch:
            # Safe: the backup ref and the stash hold everything this discards.
            repo.run(["reset", "--hard", "--quiet", wanted], what="reset")
        else:
            repo.run(["checkout", "--quiet", "--detach", wanted], what="checkout")
    except GitError as exc:
        back = put_back(repo, head, stash)
        raise GitError("%s; %s" % (exc.msg, "; ".join(back)), stash=stash, backup_ref=plan["backup_ref"], **exc.result)
    return repo.head(), stash, actions


def kept_in_place(entries, keep, files):
    """(the status entries to stash, the untracked paths of `keep` that stay where they are).

    A kept path the move itself brings (the target tracks it) is stashed as before: the target's
    own file takes its place and the host's copy waits in the stash."""
    moved = set(paths_of(files))
    keep = set(keep)
    kept = sorted(path for code, path in entries if code == "??" and path in keep and path not in moved)
    return [entry for entry in entries if entry[1] not in kept], kept


def stash_push_args(message, kept):
    """git stash push of everything uncommitted and untracked except the `kept` paths."""
    args = ["stash", "push", "--include-untracked", "-m", message]
    if kept:
        # Pathspecs from the top level whatever directory git runs in, taken literally.
        args += ["--", ":(top)"] + [":(top,exclude,literal)" + path for path in kept]
    return args


def put_back(repo, commit, stash):
    """After a failed move: abort a revert in progress, the tree back at `commit`, the stash popped."""
    done = []
    sequencer = repo.value(["rev-parse", "--path-format=absolute", "--git-path", "sequencer"])
    if repo.ref_commit("REVERT_HEAD") is not None or (sequencer and os.path.exists(sequencer)):
        repo.run_raw(["revert", "--abort"])
        done.append("revert aborted")
    if repo.resolve("HEAD") != commit or repo.status():
        repo.run(["reset", "--hard", "--quiet", commit], what="reset")
    done.append("tree back at %s" % short(commit))
    if stash:
        found = repo.find_stash(stash["message"])
        if found:
            repo.run(["stash", "pop", "--index", found[0]], what="stash pop")
            done.append("stash '%s' popped" % stash["message"])
    return done


def plan_restore(repo, backup_id, keep=()):
    """The way back to refs/lastgood/before-<id> (the commit) and its stash; `keep` as for plan_rollback."""
    check_id(backup_id)
    backup_ref = BACKUP_REF_PREFIX + backup_id
    commit = repo.ref_commit(backup_ref)
    if commit is None:
        raise GitError("backup ref %s does not exist in %s, nothing changed" % (backup_ref, repo.toplevel))
    head = repo.head()
    message = STASH_MESSAGE_PREFIX + backup_id
    found = repo.find_stash(message)
    files = [] if head == commit else repo.changed_files(head, commit)
    entries, kept = kept_in_place(repo.status(), keep, files)
    keep_head = head != commit and not repo.is_ancestor(head, commit)
    return {
        "backup_ref": backup_ref,
        "target": commit,
        "before": {"commit": head, "branch": repo.branch(), "dirty": bool(entries)},
        "uncommitted": status_lines(entries),
        "kept": kept,
        "stash": {"ref": found[0], "commit": found[1], "message": message} if found else None,
        "after_ref": AFTER_REF_PREFIX + backup_id if keep_head else None,
        "after_stash_message": "lastgood after-" + backup_id,
        "files": files,
        "commits": [] if head == commit else repo.commits("%s..%s" % (commit, head)),
        "changed": head != commit or bool(found),
    }


def apply_restore(repo, plan, check_mode):
    """Put the tree back: what it holds now is kept (refs/lastgood/after-<id>, a stash), then reset, stash popped."""
    actions = []
    head = plan["before"]["commit"]
    commit = plan["target"]
    if not plan["changed"]:
        return head, actions
    if plan["after_ref"]:
        actions.append("record %s at %s" % (plan["after_ref"], short(head)))
    if plan["before"]["dirty"]:
        actions.append("stash %d uncommitted path(s) as '%s'" % (len(plan["uncommitted"]), plan["after_stash_message"]))
    if head != commit:
        actions.append("reset %s from %s to %s" % (plan["before"]["branch"] or "detached HEAD", short(head), short(commit)))
    if plan["stash"]:
        actions.append("pop stash '%s'" % plan["stash"]["message"])
    if check_mode:
        return commit, actions
    if plan["after_ref"]:
        repo.run(["update-ref", "-m", "lastgood: after rollback", plan["after_ref"], head], what="update-ref")
    if plan["before"]["dirty"]:
        repo.run(stash_push_args(plan["after_stash_message"], plan["kept"]), what="stash push",
                 env=repo.identity_env())
    if head != commit:
        repo.run(["reset", "--hard", "--quiet", commit], what="reset")
    if plan["stash"]:
        found = repo.find_stash(plan["stash"]["message"])
        if found:
            repo.run(["stash", "pop", "--index", found[0]], what="stash pop")
    return repo.head(), actions


def record_kept(repo, backup_id, path, check_mode):
    """Record the content of the file at `path` (in the project directory) that a rollback keeps in place,
    as refs/lastgood/kept-<id>/<name> (a blob), so that the way back keeps it only while it is unchanged
    and can put it back otherwise; returns the action."""
    ref = "%s%s/%s" % (KEPT_REF_PREFIX, backup_id, os.path.basename(path))
    if not check_mode:
        blob = repo.run(["hash-object", "-w", "--", path], what="hash-object").strip()
        repo.run(["update-ref", "-m", "lastgood: kept in place", ref, blob], what="update-ref")
    return ["record %s (kept in place)" % ref]


def kept_file(repo, backup_id):
    """(name, blob) of the file the rollback `backup_id` kept in place, or (None, None)."""
    prefix = "%s%s/" % (KEPT_REF_PREFIX, backup_id)
    out = repo.value(["for-each-ref", "--format=%(refname) %(objectname)", prefix]) or ""
    for line in out.splitlines():
        ref, _space, blob = line.partition(" ")
        return ref[len(prefix):], blob
    return None, None


def write_blob(repo, blob, path):
    """Write the content of `blob` to `path`, a regular file (a link there is replaced)."""
    content = repo.run(["cat-file", "blob", blob], what="cat-file")
    if os.path.islink(path):
        os.unlink(path)
    with open(path, "w") as handle:
        handle.write(content)


def good_tag_name(stamp):
    return GOOD_TAG_PREFIX + stamp


def plan_tag(repo, name):
    """Tag HEAD `name` unless a lastgood/good-* tag already points at it."""
    rc, _out, _err = repo.run_raw(["check-ref-format", "refs/tags/" + name])
    if rc != 0 or name.startswith("-"):
        raise GitError("tag %r is not a valid tag name" % name)
    head = repo.head()
    existing = repo.tags_at(head, GOOD_TAG_PREFIX)
    taken = repo.ref_commit("refs/tags/" + name)
    if not existing and taken is not None:
        raise GitError("tag %s already exists at %s, not at HEAD (%s)" % (name, short(taken), short(head)))
    return {"commit": head, "tag": existing[-1] if existing else name, "changed": not existing}


def apply_tag(repo, plan, check_mode):
    if not plan["changed"]:
        return []
    actions = ["tag %s as %s" % (short(plan["commit"]), plan["tag"])]
    if not check_mode:
        repo.run(["tag", plan["tag"], plan["commit"]], what="tag")
    return actions


def source_services(project_dir, services, touched_paths, toplevel):
    """(services built from source, those whose build context or Dockerfile holds a touched path).

    `services` is compose's resolved config (`build.context` absolute), paths relative to `toplevel`.
    """
    built = sorted(name for name, spec in services.items() if (spec or {}).get("build"))
    absolute = [os.path.normpath(os.path.join(toplevel, path)) for path in touched_paths]
    affected = []
    for name in built:
        build = services[name]["build"]
        if isinstance(build, str):
            build = {"context": build}
        context = os.path.normpath(os.path.join(project_dir, build.get("context") or "."))
        dockerfile = build.get("dockerfile") or "Dockerfile"
        dockerfile = os.path.normpath(os.path.join(context, dockerfile))
        for path in absolute:
            if path == dockerfile or path == context or path.startswith(context + os.sep):
                affected.append(name)
                break
    return built, affected
