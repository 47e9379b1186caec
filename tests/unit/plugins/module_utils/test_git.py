# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/_git.py against real git repositories in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ansible_collections.lastgood.rollback.plugins.module_utils import _git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


class Module:
    """The two AnsibleModule methods _git uses, running the real programs."""

    def __init__(self):
        self.commands = []

    def get_bin_path(self, name, required=False):
        return shutil.which(name)

    def run_command(self, args, environ_update=None):
        self.commands.append(list(args))
        env = None
        if environ_update:
            import os
            env = dict(os.environ, **environ_update)
        proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
        return proc.returncode, proc.stdout, proc.stderr


def git(directory, *args):
    return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def work(tmp_path):
    """A repository on main: good (app.txt=1), bad (app.txt=2); returns (dir, good, bad)."""
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "t@example.invalid")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "app.txt").write_text("1\n")
    (tmp_path / "other.txt").write_text("x\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "good")
    good = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "app.txt").write_text("2\n")
    git(tmp_path, "commit", "-q", "-am", "bad")
    return tmp_path, good, git(tmp_path, "rev-parse", "HEAD")


def repo_of(directory):
    return _git.Repo(Module(), str(directory))


def test_git_state_keeps_its_shape(work):
    directory, _good, bad = work
    assert _git.git_state(Module(), str(directory)) == {"commit": bad, "branch": "main", "dirty": False,
                                                        "toplevel": str(directory)}


def test_not_a_work_tree_is_refused(tmp_path):
    with pytest.raises(_git.GitError, match="is not inside a git work tree"):
        _git.Repo(Module(), str(tmp_path))


def test_checkout_plan_apply_restore_round_trip(work):
    directory, good, bad = work
    (directory / "other.txt").write_text("edited\n")
    (directory / "new.txt").write_text("untracked\n")
    repo = repo_of(directory)
    plan = _git.plan_rollback(repo, good, "checkout", True, "t1")
    assert plan["commits"] == ["%s bad" % bad[:7]]
    assert plan["files"] == ["M app.txt"]
    assert sorted(plan["uncommitted"]) == ["?? new.txt", "M other.txt"]
    after, stash, actions = _git.apply_rollback(repo, plan, check_mode=False)
    assert after == good and git(directory, "rev-parse", "refs/lastgood/before-t1") == bad
    assert stash["message"] == "lastgood before-t1" and git(directory, "status", "--porcelain") == ""
    assert actions[0] == "record refs/lastgood/before-t1 at %s" % bad[:12]
    # a second plan at the target: nothing to do
    assert _git.plan_rollback(repo, good, "checkout", True, "t2")["changed"] is False
    restore = _git.plan_restore(repo, "t1")
    _git.apply_restore(repo, restore, check_mode=False)
    assert git(directory, "rev-parse", "HEAD") == bad
    assert (directory / "other.txt").read_text() == "edited\n" and (directory / "new.txt").read_text() == "untracked\n"
    assert git(directory, "stash", "list") == ""


def test_check_mode_changes_nothing(work):
    directory, good, bad = work
    (directory / "new.txt").write_text("untracked\n")
    repo = repo_of(directory)
    plan = _git.plan_rollback(repo, good, "checkout", True, "t1")
    after, stash, actions = _git.apply_rollback(repo, plan, check_mode=True)
    assert after == good and stash is None and len(actions) == 3
    assert git(directory, "rev-parse", "HEAD") == bad
    assert git(directory, "for-each-ref", "refs/lastgood") == "" and git(directory, "stash", "list") == ""


def test_revert_mode_adds_commits(work):
    directory, good, bad = work
    repo = repo_of(directory)
    plan = _git.plan_rollback(repo, good, "revert", True, "r1")
    after, _stash, _actions = _git.apply_rollback(repo, plan, check_mode=False)
    assert git(directory, "rev-parse", "HEAD^") == bad and after != good
    assert git(directory, "diff", good, "HEAD") == ""
    assert _git.plan_rollback(repo, good, "revert", True, "r2")["changed"] is False


@pytest.mark.parametrize("case, message", [
    ("missing", "target deadbeef is not a commit"),
    ("option", "target --help is not a commit"),
    ("detached revert", "HEAD is detached at"),
    ("not ancestor", "is not an ancestor of HEAD"),
    ("dirty no stash", "uncommitted changes the rollback would touch (app.txt)"),
    ("bad id", "backup_ref_id '../x' is not a safe name"),
    ("taken id", "backup ref refs/lastgood/before-taken already exists"),
    ("changed since a resumed move", "before-moved names another commit (an interrupted move of this id), but the tree has"
                                     " changed since (new.txt): a resumed run only rebuilds"),
])
def test_refusals_change_nothing(work, case, message):
    directory, good, bad = work
    target, mode, stash, backup_id = good, "checkout", True, "t"
    if case == "missing":
        target = "deadbeef"
    elif case == "option":
        target = "--help"
    elif case == "detached revert":
        git(directory, "checkout", "-q", "--detach")
        mode = "revert"
    elif case == "not ancestor":
        git(directory, "checkout", "-q", "-b", "other", good)
        (directory / "x.txt").write_text("x\n")
        git(directory, "add", "x.txt")
        git(directory, "commit", "-q", "-m", "x")
        git(directory, "checkout", "-q", "main")
        target, mode = "other", "revert"
    elif case == "dirty no stash":
        (directory / "app.txt").write_text("mine\n")
        stash = False
    elif case == "bad id":
        backup_id = "../x"
    elif case == "taken id":
        git(directory, "update-ref", "refs/lastgood/before-taken", good)
        backup_id = "taken"
    elif case == "changed since a resumed move":
        git(directory, "update-ref", "refs/lastgood/before-moved", bad)
        git(directory, "checkout", "-q", good)
        (directory / "new.txt").write_text("after the interruption\n")
        backup_id = "moved"
    before = (git(directory, "rev-parse", "HEAD"), git(directory, "status", "--porcelain"),
              git(directory, "for-each-ref"))
    with pytest.raises(_git.GitError) as caught:
        _git.plan_rollback(repo_of(directory), target, mode, stash, backup_id)
    assert message in caught.value.msg
    assert before == (git(directory, "rev-parse", "HEAD"), git(directory, "status", "--porcelain"),
                      git(directory, "for-each-ref"))


def test_shallow_clone_lacking_the_target(work, tmp_path_factory):
    directory, good, _bad = work
    clone = tmp_path_factory.mktemp("clone") / "c"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "file://%s" % directory, str(clone)], check=True)
    with pytest.raises(_git.GitError, match="^shallow clone lacks %s: fetch the history first" % good):
        _git.plan_rollback(repo_of(clone), good, "checkout", True, "s")


def test_tag_once_per_commit(work):
    directory, _good, bad = work
    repo = repo_of(directory)
    plan = _git.plan_tag(repo, "lastgood/good-1")
    assert plan["changed"] is True
    _git.apply_tag(repo, plan, check_mode=False)
    assert git(directory, "rev-list", "-n1", "lastgood/good-1") == bad
    again = _git.plan_tag(repo, "lastgood/good-2")
    assert again == {"commit": bad, "tag": "lastgood/good-1", "changed": False}
    with pytest.raises(_git.GitError, match="not a valid tag name"):
        _git.plan_tag(repo, "bad..name")


def test_default_ids_taken_in_the_same_second_get_a_suffix(work):
    directory, good, bad = work
    repo = repo_of(directory)
    before = _git.BACKUP_REF_PREFIX
    assert _git.free_id(repo, before, "T") == "T"
    _git.apply_rollback(repo, _git.plan_rollback(repo, good, "checkout", True, "T"), check_mode=False)
    # before-T is at bad, HEAD at good: a second move in the same second gets its own id, not a refusal
    assert _git.free_id(repo, before, "T") == "T-2"
    _git.apply_rollback(repo, _git.plan_rollback(repo, bad, "checkout", True, "T-2"), check_mode=False)
    # back at bad, where before-T is: still another move's (its stash name, its kept refs)
    assert _git.free_id(repo, before, "T") == "T-3"
    # a good tag of another commit in the same second: the next name, not "already exists"
    tags = "refs/tags/" + _git.GOOD_TAG_PREFIX
    _git.apply_tag(repo, _git.plan_tag(repo, _git.good_tag_name("T")), check_mode=False)
    assert _git.free_id(repo, tags, "T", reuse_at_head=True) == "T"  # plan_tag keeps the tag at HEAD
    git(directory, "checkout", "-q", good)
    assert _git.free_id(repo, tags, "T", reuse_at_head=True) == "T-2"
    assert _git.plan_tag(repo, _git.good_tag_name("T-2"))["changed"] is True


def test_source_services_follow_the_build_context(tmp_path):
    services = {
        "web": {"build": {"context": str(tmp_path / "web"), "dockerfile": "Dockerfile"}},
        "api": {"build": {"context": str(tmp_path / "api"), "dockerfile": "../docker/api.Dockerfile"}},
        "db": {"image": "postgres"},
    }
    assert _git.source_services(str(tmp_path), services, ["web/index.html"], str(tmp_path)) == (["api", "web"], ["web"])
    assert _git.source_services(str(tmp_path), services, ["docker/api.Dockerfile"], str(tmp_path)) == (["api", "web"], ["api"])
    assert _git.source_services(str(tmp_path), services, ["README"], str(tmp_path)) == (["api", "web"], [])


def test_parse_status_z_keeps_the_source_of_a_rename_with_its_entry():
    out = " M app.py\0R  new.conf\0old.conf\0?? notes.txt\0"
    assert _git.parse_status_z(out) == [
        (" M", "app.py", None), ("R ", "new.conf", "old.conf"), ("??", "notes.txt", None)]
    assert _git.parse_status_z("") == []


def test_the_hosts_untracked_configuration_stays_while_the_code_moves(work):
    """An untracked .env (the stack's settings) is neither stashed nor lost, there and back."""
    directory, good, bad = work
    (directory / ".env").write_text("DB_PASSWORD=s3cret\n")
    (directory / "new.txt").write_text("untracked\n")
    repo = repo_of(directory)
    plan = _git.plan_rollback(repo, good, "checkout", True, "k1", keep=[".env", "compose.override.yaml"])
    assert plan["kept"] == [".env"] and plan["uncommitted"] == ["?? new.txt"]
    after, stash, _actions = _git.apply_rollback(repo, plan, check_mode=False)
    assert after == good and stash["message"] == "lastgood before-k1"
    assert (directory / ".env").read_text() == "DB_PASSWORD=s3cret\n" and not (directory / "new.txt").exists()
    assert git(directory, "status", "--porcelain", "-uall") == "?? .env"
    restore = _git.plan_restore(repo, "k1", keep=[".env"])
    assert restore["kept"] == [".env"] and restore["uncommitted"] == []
    _git.apply_restore(repo, restore, check_mode=False)
    assert git(directory, "rev-parse", "HEAD") == bad and git(directory, "stash", "list") == ""
    assert (directory / ".env").read_text() == "DB_PASSWORD=s3cret\n" and (directory / "new.txt").exists()


def test_only_kept_files_dirty_is_a_clean_tree(work):
    """Nothing to stash, and stash=false is not refused for them; at the target, nothing changes."""
    directory, good, _bad = work
    (directory / ".env").write_text("A=1\n")
    repo = repo_of(directory)
    plan = _git.plan_rollback(repo, good, "checkout", False, "k2", keep=[".env"])
    assert plan["stash_wanted"] is False and plan["before"]["dirty"] is False
    _git.apply_rollback(repo, plan, check_mode=False)
    assert git(directory, "stash", "list") == "" and (directory / ".env").read_text() == "A=1\n"
    assert _git.plan_rollback(repo, good, "checkout", True, "k3", keep=[".env"])["changed"] is False


def test_a_kept_file_the_target_tracks_waits_in_the_stash(work):
    """The target brings its own .env: the host's copy is stashed, not overwritten by reset --hard."""
    directory, _good, bad = work
    (directory / ".env").write_text("TRACKED=1\n")
    git(directory, "add", ".env")
    git(directory, "commit", "-q", "-m", "track .env")
    tracked = git(directory, "rev-parse", "HEAD")
    git(directory, "reset", "-q", "--hard", bad)
    (directory / ".env").write_text("HOST=1\n")
    repo = repo_of(directory)
    plan = _git.plan_rollback(repo, tracked, "checkout", True, "k4", keep=[".env"])
    assert plan["kept"] == [] and plan["uncommitted"] == ["?? .env"]
    _after, stash, _actions = _git.apply_rollback(repo, plan, check_mode=False)
    assert (directory / ".env").read_text() == "TRACKED=1\n" and stash is not None
    assert git(directory, "show", "%s^3:.env" % stash["commit"]) == "HOST=1"


def test_stash_push_args_exclude_kept_paths_from_the_top_level():
    assert _git.stash_push_args("m", []) == ["stash", "push", "--include-untracked", "-m", "m"]
    assert _git.stash_push_args("m", ["app/.env"])[-3:] == ["--", ":(top)", ":(top,exclude,literal)app/.env"]


def test_a_kept_file_is_recorded_by_name_and_content(work):
    directory, _good, _bad = work
    repo = repo_of(directory)
    override = directory / "compose.override.yaml"
    override.write_text("services: {}\n")
    assert _git.kept_file(repo, "k1") == (None, None)  # nothing recorded
    assert _git.record_kept(repo, "k1", str(override), check_mode=True) == [
        "record refs/lastgood/kept-k1/compose.override.yaml (kept in place)"]
    assert git(directory, "for-each-ref", "refs/lastgood/") == ""
    _git.record_kept(repo, "k1", str(override), check_mode=False)
    name, blob = _git.kept_file(repo, "k1")
    assert name == "compose.override.yaml" and blob == git(directory, "hash-object", str(override))
    assert _git.kept_file(repo, "k2") == (None, None)
    override.unlink()
    override.symlink_to("elsewhere.yaml")
    _git.write_blob(repo, blob, str(override))
    assert not override.is_symlink() and override.read_text() == "services: {}\n"


def test_git_state_leaves_out_untracked_recorded_files_only(work):
    directory, _good, _bad = work
    module = Module()
    (directory / ".env").write_text("A=1\n")
    assert _git.git_state(module, str(directory))["dirty"] is True
    assert _git.git_state(module, str(directory), recorded=[".env"])["dirty"] is False
    (directory / "app.txt").write_text("edited\n")
    assert _git.git_state(module, str(directory), recorded=[".env", "app.txt"])["dirty"] is True


def test_a_symlinked_env_file_is_kept_as_the_link_git_reports(work):
    """host_paths resolves the directory, not the file: git reports `.env`, not its target."""
    from ansible_collections.lastgood.rollback.plugins.modules.git_revert import host_paths

    directory, _good, _bad = work
    (directory / "envs").mkdir()
    (directory / "envs" / "prod.env").write_text("A=1\n")
    (directory / ".env").symlink_to("envs/prod.env")

    class Project:
        project_dir = str(directory)

        def host_files(self, with_override=True):
            return [".env", "compose.yaml"] + (["compose.override.yaml"] if with_override else [])

    assert host_paths(repo_of(directory), Project()) == [".env", "compose.yaml"]


def test_an_env_file_compose_cannot_read_is_no_crash(tmp_path):
    from ansible_collections.lastgood.rollback.plugins.module_utils._compose import read_env_file

    (tmp_path / ".env").write_bytes(b"NAME=caf\xe9\n")
    assert read_env_file(str(tmp_path / ".env")) == {}
