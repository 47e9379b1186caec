# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tier 3 (code): playbooks/rollback_code.yml and the git_revert module, against real git and a real engine.

The test project (tests/integration/code_support.py) is a git work tree with a service built from
source (web) and one that is not (side). The scenario: commit the good release, snapshot, commit a
release whose web never turns healthy, deploy it, leave an uncommitted edit and an untracked file,
then `--check`, the rollback and a second rollback. The fault cases (shallow clone, detached HEAD,
missing target, conflicting dirty tree, a failing build, an unhealthy gate) each get a project of
their own; every one must end with a clear message and nothing lost.
"""

from __future__ import annotations

import contextlib
import json
import re
import types

import pytest

try:
    from . import ansible_run, code_support, stacks
except ImportError:
    import ansible_run
    import code_support
    import stacks

GOOD_TAG = re.compile(r"lastgood/good-\d{8}T\d{6}Z")
BACKUP_REF = re.compile(r"refs/lastgood/before-\d{8}T\d{6}Z")
# A failing gate must not take a minute in these tests.
SHORT_GATE = {"health_gate_deadline_s": 6}


@pytest.fixture(scope="module")
def repos(docker_client, tmp_path_factory):
    """Factory of code test projects, all destroyed after the file's last test."""
    parent = tmp_path_factory.mktemp("code")
    created = []

    def factory(up=True, **options):
        repo = code_support.CodeRepo.create(parent, docker_client, up=up, **options)
        created.append(repo)
        return repo

    yield factory
    for repo in created:
        repo.destroy()


def wait_version(repo, version, timeout=30):
    stacks.wait_until(lambda: repo.get("web", "/version") == (200, version + "\n"), timeout,
                      message="%s web answers %s" % (repo.project, version))


def report_lines(run):
    lines = []
    for result in run.results_of_module("ansible.builtin.debug"):
        message = result.get("msg")
        lines += message if isinstance(message, list) else [str(message)]
    return lines


def git_state(repo):
    """Everything of the work tree a run could change or lose."""
    return {
        "head": repo.head(),
        "branch": repo.branch(),
        "status": repo.status(),
        "readme": (repo.dir / "README").read_text(),
        "notes": (repo.dir / "notes.txt").read_text() if (repo.dir / "notes.txt").exists() else None,
        "refs": repo.refs(),
        "tags": repo.tags("*"),
        "stashes": repo.stashes(),
    }


class Scenario:
    def __init__(self, repo, work):
        self.repo = repo
        self.backup_root = work / "backups"
        self.inventory = ansible_run.write_inventory(work, repo.host_vars(self.backup_root), name=repo.project + ".yml")
        self.runs, self.git, self.containers = {}, {}, {}

    def step(self, label, **kwargs):
        self.runs[label] = ansible_run.run_playbook("rollback_code", self.inventory, **kwargs)
        self.git[label] = git_state(self.repo)
        self.containers[label] = self.repo.containers()
        return self.runs[label]


@pytest.fixture(scope="module")
def scenario(repos, docker_client, tmp_path_factory):
    repo = repos()
    scenario = Scenario(repo, tmp_path_factory.mktemp("scenario"))
    try:
        yield from play_scenario(scenario, repo)
    finally:
        # The snapshot pins side's image (lastgood-bench/busybox) under a lastgood-<project>-<id> tag.
        ansible_run.remove_snapshot_pins(docker_client, scenario.backup_root)


def play_scenario(scenario, repo):
    snapshot = ansible_run.run_playbook("snapshot", scenario.inventory)
    assert snapshot.rc == 0, snapshot.describe()
    scenario.snapshot_id = snapshot.outcome()["snapshot_id"]
    scenario.good = repo.head()
    scenario.good_image = repo.image_of_reference()
    scenario.bad = repo.commit_bad()
    repo.deploy()
    wait_version(repo, "bad")
    scenario.bad_image = repo.image_of_reference()
    # Work in progress that a rollback must not lose.
    (repo.dir / "README").write_text("an edit nobody committed\n")
    (repo.dir / "notes.txt").write_text("an untracked file\n")
    scenario.git["deployed"] = git_state(repo)
    scenario.containers["deployed"] = repo.containers()
    scenario.step("check", check=True)
    scenario.step("rollback")
    scenario.version = repo.get("web", "/version")
    scenario.health = repo.health("web")
    scenario.image = repo.image_of_reference()
    scenario.step("again")
    yield scenario


def succeeded(scenario, label):
    run = scenario.runs[label]
    assert run.rc == 0, run.describe()
    return run


def test_check_mode_lists_the_plan_and_changes_nothing(scenario):
    run = succeeded(scenario, "check")
    assert scenario.git["check"] == scenario.git["deployed"]
    assert scenario.containers["check"] == scenario.containers["deployed"]
    outcome = run.outcome()
    assert outcome["result"] == "planned" and outcome["check_mode"] is True
    assert outcome["commits"] == ["%s web bad" % scenario.bad[:7]]
    assert outcome["files"] == ["A web/www/health", "M web/www/version"]
    assert outcome["commit_after"] == scenario.good
    assert outcome["services_changed"] == ["web"]
    move = run.results_of_module("lastgood.rollback.git_revert")[0]
    assert move["changed"] is True
    assert sorted(move["uncommitted"]) == ["?? notes.txt", "M README"]
    assert "web/www/version" in move["diff"]["after"] and "README" in move["diff"]["before"]
    lines = report_lines(run)
    assert any(line.startswith("reset branch main from %s to %s" % (scenario.bad[:12], scenario.good[:12])) for line in lines), lines


def test_the_tree_is_at_the_snapshot_commit_on_its_branch(scenario):
    succeeded(scenario, "rollback")
    state = scenario.git["rollback"]
    assert state["head"] == scenario.good
    assert state["branch"] == "main"
    assert state["status"] == ""


def test_the_commit_before_is_kept_in_a_backup_ref(scenario):
    run = succeeded(scenario, "rollback")
    refs = scenario.git["rollback"]["refs"]
    assert len(refs) == 1
    (ref, commit), = refs.items()
    assert BACKUP_REF.fullmatch(ref) and commit == scenario.bad
    assert run.outcome()["backup_ref"] == ref


def test_uncommitted_and_untracked_work_is_in_the_named_stash(scenario):
    run = succeeded(scenario, "rollback")
    repo = scenario.repo
    (commit, subject), = scenario.git["rollback"]["stashes"]
    backup_id = run.outcome()["backup_ref"].rsplit("before-", 1)[1]
    assert subject == "On main: lastgood before-%s" % backup_id
    assert repo.out("show", "%s:README" % commit) == "an edit nobody committed"
    # The third parent of a stash made with --include-untracked holds the untracked files.
    assert repo.out("show", "%s^3:notes.txt" % commit) == "an untracked file"
    # The stash was made on top of the bad release.
    assert repo.out("rev-parse", "%s^1" % commit) == scenario.bad
    # The git-ignored .env was left where it is.
    assert (repo.dir / ".env").is_file()


def test_the_service_built_from_source_is_rebuilt_recreated_and_healthy(scenario):
    succeeded(scenario, "rollback")
    assert scenario.version == (200, "good\n")
    assert scenario.health == "healthy"
    assert scenario.image != scenario.bad_image
    before, after = scenario.containers["deployed"], scenario.containers["rollback"]
    assert after["web"][0] != before["web"][0] and after["web"][1] == scenario.image
    # side is not built from source: neither recreated nor restarted.
    assert after["side"] == before["side"]


def test_the_result_is_tagged_known_good(scenario):
    run = succeeded(scenario, "rollback")
    tags = scenario.git["rollback"]["tags"]
    assert len(tags) == 1 and GOOD_TAG.fullmatch(tags[0]), tags
    assert scenario.repo.out("rev-list", "-n1", tags[0]) == scenario.good
    outcome = run.outcome()
    assert outcome["tier"] == "code" and outcome["result"] == "success" and outcome["healthy"] is True
    assert outcome["tag"] == tags[0] and outcome["snapshot_id"] == scenario.snapshot_id


def test_a_second_run_changes_nothing(scenario):
    run = succeeded(scenario, "again")
    assert run.recap["changed"] == 0, run.describe()
    assert scenario.git["again"] == scenario.git["rollback"]
    assert scenario.containers["again"] == scenario.containers["rollback"]
    assert run.outcome()["services_changed"] == []


def test_revert_mode_keeps_the_history(repos, tmp_path):
    repo = repos()
    good = repo.head()
    bad = repo.commit_bad()
    repo.deploy()
    wait_version(repo, "bad")
    inventory = ansible_run.write_inventory(tmp_path, repo.host_vars(tmp_path / "backups"))
    run = ansible_run.run_playbook("rollback_code", inventory,
                                   extra_vars={"lastgood_git_ref": good, "lastgood_git_mode": "revert"})
    assert run.rc == 0, run.describe()
    head = repo.head()
    assert head not in (good, bad)
    assert repo.out("rev-parse", "HEAD^") == bad  # a revert commit on top of the bad one
    assert repo.out("log", "-1", "--format=%s") == 'Revert "web bad"'
    assert repo.out("diff", good, "HEAD") == ""  # ... whose tree is the good one
    assert repo.branch() == "main" and repo.status() == ""
    assert repo.refs() == {"refs/lastgood/before-%s" % run.outcome()["backup_ref"].rsplit("before-", 1)[1]: bad}
    assert run.outcome()["mode"] == "revert" and run.outcome()["healthy"] is True
    wait_version(repo, "good", timeout=5)
    again = ansible_run.run_playbook("rollback_code", inventory,
                                     extra_vars={"lastgood_git_ref": good, "lastgood_git_mode": "revert"})
    assert again.rc == 0 and again.recap["changed"] == 0, again.describe()
    assert repo.head() == head


# -- refusals: one line, nothing changed ---------------------------------------------------------

@pytest.fixture
def idle_repo(repos):
    """A project with a good and a bad commit, not running (the module only reads the compose config)."""
    repo = repos(up=False)
    repo.good = repo.head()
    repo.bad = repo.commit_bad()
    return repo


def run_git_revert(repo, tmp_path, check=False, **args):
    inventory = ansible_run.write_inventory(tmp_path, repo.host_vars(tmp_path / "backups"))
    args = dict({"project_dir": str(repo.dir), "backup_root": str(tmp_path / "backups")}, **args)
    return ansible_run.run_module(inventory, "git_revert", args, tmp_path, check=check)


def refused(run):
    assert run.rc != 0, run.describe()
    return run.failure_msg()


def test_a_missing_target_is_refused(idle_repo, tmp_path):
    before = git_state(idle_repo)
    msg = refused(run_git_revert(idle_repo, tmp_path, target="0123456789abcdef0123456789abcdef01234567"))
    assert msg == "target 0123456789abcdef0123456789abcdef01234567 is not a commit in %s, nothing changed" % idle_repo.dir
    assert git_state(idle_repo) == before


def test_a_target_that_looks_like_an_option_is_refused(idle_repo, tmp_path):
    before = git_state(idle_repo)
    assert "is not a commit" in refused(run_git_revert(idle_repo, tmp_path, target="--orphan"))
    assert git_state(idle_repo) == before


def test_a_shallow_clone_lacking_the_target_is_refused(idle_repo, tmp_path):
    clone = tmp_path / "clone"
    stacks.run(["git", "clone", "-q", "--depth", "1", "file://%s" % idle_repo.dir, clone])
    (clone / ".env").write_text((idle_repo.dir / ".env").read_text())
    head = stacks.run(["git", "-C", clone, "rev-parse", "HEAD"]).stdout.strip()
    inventory = ansible_run.write_inventory(tmp_path, idle_repo.host_vars(tmp_path / "backups"))
    run = ansible_run.run_module(inventory, "git_revert", {"project_dir": str(clone), "target": idle_repo.good}, tmp_path)
    msg = refused(run)
    assert msg.startswith("shallow clone lacks %s: fetch the history first" % idle_repo.good), msg
    assert "--unshallow" in msg
    assert stacks.run(["git", "-C", clone, "rev-parse", "HEAD"]).stdout.strip() == head
    assert stacks.run(["git", "-C", clone, "for-each-ref", "refs/lastgood"]).stdout == ""


def test_revert_mode_on_a_detached_head_is_refused(idle_repo, tmp_path):
    idle_repo.git("checkout", "-q", "--detach", idle_repo.bad)
    before = git_state(idle_repo)
    msg = refused(run_git_revert(idle_repo, tmp_path, target=idle_repo.good, mode="revert"))
    assert msg.startswith("HEAD is detached at %s: revert mode adds commits to a branch" % idle_repo.bad[:12]), msg
    assert git_state(idle_repo) == before


def test_checkout_mode_on_a_detached_head_checks_out_detached(idle_repo, tmp_path):
    idle_repo.git("checkout", "-q", "--detach", idle_repo.bad)
    (idle_repo.dir / "notes.txt").write_text("untracked work\n")
    run = run_git_revert(idle_repo, tmp_path, target=idle_repo.good)
    assert run.rc == 0, run.describe()
    result = run.result()
    assert idle_repo.head() == idle_repo.good and idle_repo.branch() is None
    assert idle_repo.out("rev-parse", "main") == idle_repo.bad  # the branch is untouched
    assert result["before"] == {"commit": idle_repo.bad, "branch": None, "dirty": True}
    assert result["stash"]["message"].startswith("lastgood before-")
    assert idle_repo.out("show", "%s^3:notes.txt" % result["stash"]["commit"]) == "untracked work"
    assert idle_repo.refs() == {result["backup_ref"]: idle_repo.bad}
    # and back: the tree where it was, the untracked file popped from the stash
    back = run_git_revert(idle_repo, tmp_path, state="restored", backup_ref_id=result["backup_ref_id"])
    assert back.rc == 0, back.describe()
    assert idle_repo.head() == idle_repo.bad and idle_repo.branch() is None
    assert (idle_repo.dir / "notes.txt").read_text() == "untracked work\n" and idle_repo.stashes() == []


def test_conflicting_changes_without_stash_are_refused_in_revert_mode(idle_repo, tmp_path):
    (idle_repo.dir / "web" / "www" / "version").write_text("hand-edited\n")
    before = git_state(idle_repo)
    msg = refused(run_git_revert(idle_repo, tmp_path, target=idle_repo.good, mode="revert", stash=False))
    assert msg == ("the work tree has uncommitted changes the rollback would touch (web/www/version): commit them or use"
                   " stash=true, nothing changed")
    assert git_state(idle_repo) == before
    assert (idle_repo.dir / "web" / "www" / "version").read_text() == "hand-edited\n"


def test_revert_mode_refuses_merge_commits(idle_repo, tmp_path):
    idle_repo.git("checkout", "-q", "-b", "side", idle_repo.good)
    (idle_repo.dir / "README").write_text("from a side branch\n")
    idle_repo.commit_all("side change")
    idle_repo.git("checkout", "-q", "main")
    idle_repo.git("merge", "-q", "--no-ff", "--no-edit", "side")
    before = git_state(idle_repo)
    msg = refused(run_git_revert(idle_repo, tmp_path, target=idle_repo.good, mode="revert"))
    assert msg.startswith("revert mode cannot undo merge commits"), msg
    assert git_state(idle_repo) == before


def test_check_mode_equals_the_real_run_and_the_second_run_changes_nothing(idle_repo, tmp_path):
    (idle_repo.dir / "README").write_text("dirty\n")
    args = {"target": idle_repo.good, "backup_ref_id": "cycle"}
    inventory = ansible_run.write_inventory(tmp_path, idle_repo.host_vars(tmp_path / "backups"))
    cycle = ansible_run.run_cycle(inventory, "git_revert", dict(args, project_dir=str(idle_repo.dir)), tmp_path)
    check, real = cycle.results["check"], cycle.results["run"]
    assert check["changed"] is real["changed"] is True
    for key in ("commits", "files", "uncommitted", "target", "before", "backup_ref", "actions", "services_to_rebuild"):
        assert check[key] == real[key], key
    assert check["after"]["commit"] == real["after"]["commit"] == idle_repo.good
    assert cycle.results["check again"]["changed"] is False and cycle.results["run again"]["changed"] is False
    assert real["services_to_rebuild"] == ["web"] and real["services_from_source"] == ["web"]
    assert idle_repo.refs() == {"refs/lastgood/before-cycle": idle_repo.bad}
    # The same id again (a run resumed after an interruption between the move and the rebuild): the
    # move it made is found, so the rebuild is not skipped. Another id has nothing to rebuild.
    again = cycle.results["run again"]
    assert again["resumed"] is True and again["services_to_rebuild"] == ["web"] and real["resumed"] is False
    other = run_git_revert(idle_repo, tmp_path, target=idle_repo.good, backup_ref_id="another")
    assert other.rc == 0, other.describe()
    assert other.result()["changed"] is False and other.result()["resumed"] is False
    assert other.result()["services_to_rebuild"] == []


def test_an_untracked_env_file_stays_in_place_while_the_code_moves(repos, tmp_path):
    """The .env holds the ports and is not ignored: stashed with the code, the rebuilt web would
    start without WEB_PORT. It stays; the rest of the untracked work goes into the stash."""
    repo = repos(ignore_env=False)
    env = (repo.dir / ".env").read_text()
    good = repo.head()
    repo.commit_bad()
    repo.deploy()
    wait_version(repo, "bad")
    (repo.dir / "notes.txt").write_text("an untracked file\n")
    inventory = ansible_run.write_inventory(tmp_path, repo.host_vars(tmp_path / "backups"))
    run = ansible_run.run_playbook("rollback_code", inventory, extra_vars={"lastgood_git_ref": good})
    assert run.rc == 0, run.describe()
    move = run.results_of_module("lastgood.rollback.git_revert")[0]
    assert move["kept"] == [".env"] and move["uncommitted"] == ["?? notes.txt"]
    assert repo.head() == good and repo.status() == "?? .env"
    assert (repo.dir / ".env").read_text() == env and not (repo.dir / "notes.txt").exists()
    wait_version(repo, "good")
    assert repo.health("web") == "healthy"
    stash = repo.stashes()[0][0]
    assert repo.out("show", "--name-only", "--format=", stash + "^3") == "notes.txt"


OVERRIDE = """\
services:
  web:
    labels:
      lastgood.test.override: "%s"
"""


def test_an_override_the_snapshot_recorded_stays_while_the_code_moves(repos, docker_client, tmp_path):
    """The host's untracked compose.override.yaml, which compose adds by itself: as the snapshot
    recorded it, the move leaves it in place and the rebuilt web is recreated with it (stashed, the
    stack would start without the host's override). The way back keeps it only while it has the
    content the move kept. Changed since the snapshot, the move does not vouch for it: stashed, with
    a warning, and the way back pops it."""
    repo = repos(up=False)
    override = repo.dir / "compose.override.yaml"
    override.write_text(OVERRIDE % "host")
    repo.up()
    backup_root = tmp_path / "backups"
    inventory = ansible_run.write_inventory(tmp_path, repo.host_vars(backup_root))

    def roll_back():
        run = ansible_run.run_playbook("rollback_code", inventory, extra_vars=SHORT_GATE)
        assert run.rc == 0, run.describe()
        assert repo.head() == good
        wait_version(repo, "good")
        return run.results_of_module("lastgood.rollback.git_revert")[0]

    def undo(move):
        back = run_git_revert(repo, tmp_path, state="restored", backup_ref_id=move["backup_ref_id"])
        assert back.rc == 0, back.describe()
        assert repo.head() == bad
        return back.result()

    try:
        snapshot = ansible_run.run_playbook("snapshot", inventory)
        assert snapshot.rc == 0, snapshot.describe()
        good, bad = repo.head(), repo.commit_bad()
        repo.deploy()
        wait_version(repo, "bad")
        assert repo.status() == "?? compose.override.yaml"

        move = roll_back()
        assert move["kept"] == ["compose.override.yaml"] and move["uncommitted"] == [] and move["stash"] is None
        assert not move.get("warnings"), move.get("warnings")
        kept_ref = "refs/lastgood/kept-%s/compose.override.yaml" % move["backup_ref_id"]
        assert kept_ref in repo.refs() and repo.status() == "?? compose.override.yaml"
        assert override.read_text() == OVERRIDE % "host"
        assert repo.container("web").labels.get("lastgood.test.override") == "host"
        back = undo(move)
        assert back["kept"] == ["compose.override.yaml"] and back["uncommitted"] == []
        assert override.read_text() == OVERRIDE % "host"

        # The runbook's way back, a move to the backup ref: the last known good snapshot vouches.
        move = roll_back()
        forth = run_git_revert(repo, tmp_path, target="refs/lastgood/before-%s" % move["backup_ref_id"],
                               backup_ref_id="forth-%s" % move["backup_ref_id"])
        assert forth.rc == 0, forth.describe()
        assert forth.result()["kept"] == ["compose.override.yaml"] and not forth.result().get("warnings")
        assert repo.head() == bad and override.read_text() == OVERRIDE % "host"

        # Kept by the move, then changed: the way back does not vouch for the change. It goes into the
        # after stash with the tree's other changes, and the file comes back as the rollback found it.
        move = roll_back()
        assert move["kept"] == ["compose.override.yaml"]
        override.write_text(OVERRIDE % "edited")
        back = undo(move)
        assert back["kept"] == [] and back["uncommitted"] == ["?? compose.override.yaml"]
        assert "put compose.override.yaml back as the rollback kept it" in back["actions"]
        assert any("changed after the rollback kept it in place (the changed one went into the stash" in warning
                   for warning in back.get("warnings", [])), back
        assert override.read_text() == OVERRIDE % "host"
        after_stash = repo.stashes()[0]
        assert after_stash[1].endswith("lastgood after-%s" % move["backup_ref_id"])
        assert repo.out("show", "%s^3:compose.override.yaml" % after_stash[0]) == (OVERRIDE % "edited").strip()

        # Changed after the snapshot: not what the stack had when it was good.
        override.write_text(OVERRIDE % "changed")
        move = roll_back()
        assert move["kept"] == [] and move["uncommitted"] == ["?? compose.override.yaml"]
        assert any("compose.override.yaml goes into the stash" in warning and "did not record this content" in warning
                   for warning in move.get("warnings", [])), move.get("warnings")
        assert not override.exists() and not any(ref.startswith("refs/lastgood/kept-%s" % move["backup_ref_id"])
                                                 for ref in repo.refs())
        assert "lastgood.test.override" not in repo.container("web").labels
        undo(move)
        assert override.read_text() == OVERRIDE % "changed"
    finally:
        ansible_run.remove_snapshot_pins(docker_client, backup_root)


def next_release(repo, tmp_path):
    """(a commit "web next" on top of HEAD, which stays where it is; an inventory to deploy it with)."""
    repo.write_version("next")
    target = repo.commit_all("web next")
    repo.git("reset", "-q", "--hard", "HEAD~1")
    watch = {"lastgood_watch_s": 2, "lastgood_watch_interval_s": 0.5}
    return target, ansible_run.write_inventory(tmp_path, repo.host_vars(tmp_path / "backups", **watch))


def test_a_deploy_of_new_code_builds_with_its_own_env_values(repos, tmp_path):
    """deploy.yml with a git ref and .env values, the .env untracked: the move leaves it in place,
    the values are written, and only then is web rebuilt, so its build arg reads the new value."""
    repo = repos(ignore_env=False)
    (repo.dir / ".env").write_text((repo.dir / ".env").read_text() + "NOTE=old\n")
    good = repo.head()
    target, inventory = next_release(repo, tmp_path)
    try:
        run = ansible_run.run_playbook("deploy", inventory, extra_vars={
            "lastgood_deploy_git_ref": target, "lastgood_deploy_env": {"NOTE": "new"}})
        assert run.rc == 0, run.describe()
        assert run.outcome()["result"] == "success"
        assert repo.head() == target and repo.status() == "?? .env"
        assert "NOTE=new" in (repo.dir / ".env").read_text().splitlines()
        assert repo.build_note() == "new"
        wait_version(repo, "next")
        # The move is named after the deploy's run: a resumed deploy finds it again.
        run_id = run.outcome()["run_id"]
        assert repo.refs() == {"refs/lastgood/before-deploy-%s" % run_id: good}
    finally:
        ansible_run.remove_snapshot_pins(repo.client, tmp_path / "backups")


def test_a_deploy_of_new_code_keeps_the_hosts_override(repos, docker_client, tmp_path):
    """deploy.yml with a git ref on a host with an untracked compose.override.yaml: the snapshot the
    deploy takes first records it, so the move leaves it in place and the new web runs with it."""
    repo = repos(up=False)
    override = repo.dir / "compose.override.yaml"
    override.write_text(OVERRIDE % "host")
    repo.up()
    target, inventory = next_release(repo, tmp_path)
    try:
        run = ansible_run.run_playbook("deploy", inventory, extra_vars={"lastgood_deploy_git_ref": target})
        assert run.rc == 0, run.describe()
        assert run.outcome()["result"] == "success"
        move = run.results_of_module("lastgood.rollback.git_revert")[0]
        assert move["kept"] == ["compose.override.yaml"] and move["stash"] is None, move
        assert repo.head() == target and repo.status() == "?? compose.override.yaml"
        wait_version(repo, "next")
        assert repo.container("web").labels.get("lastgood.test.override") == "host"
    finally:
        ansible_run.remove_snapshot_pins(docker_client, tmp_path / "backups")


# -- failures after the move: the tree goes back ---------------------------------------------------

def test_a_failing_build_returns_the_tree(repos, tmp_path):
    repo = repos()
    dockerfile = repo.dir / "web" / "Dockerfile"
    dockerfile.write_text(code_support.DOCKERFILE.format(project=repo.project) + "COPY missing-file /nowhere\n")
    broken = repo.commit_all("a release that does not build")
    dockerfile.write_text(code_support.DOCKERFILE.format(project=repo.project))
    fixed = repo.commit_all("fixed again")
    (repo.dir / "README").write_text("work in progress\n")
    before = git_state(repo)
    containers = repo.containers()
    # The project's place under the backup root, as a first snapshot leaves it: the tier holds the lock.
    project_root = tmp_path / "backups" / repo.project
    project_root.mkdir(parents=True)
    inventory = ansible_run.write_inventory(tmp_path, repo.host_vars(tmp_path / "backups"))
    run = ansible_run.run_playbook("rollback_code", inventory, extra_vars={"lastgood_git_ref": broken})
    assert run.rc != 0
    msg = run.failure_msg()
    assert msg.startswith("code rollback failed: rebuilding web failed: ") and "missing-file" in msg, msg
    assert msg.endswith("; the tree is back at %s" % fixed), msg
    after = git_state(repo)
    assert after["head"] == fixed and after["branch"] == "main"
    assert after["readme"] == "work in progress\n" and after["status"] == before["status"] and after["stashes"] == []
    assert list(after["refs"].values()) == [fixed]  # the backup ref stays, for the record
    assert after["tags"] == []
    assert repo.containers()["side"] == containers["side"]
    outcome = run.outcome()
    assert outcome["result"] == "failed" and outcome["restored"] is True
    # The move and the undo each held the lock on their own (the undo under the name the move
    # resolved) and left their line; no lock is left behind.
    lines = [json.loads(text) for text in (project_root / "audit.jsonl").read_text().splitlines()]
    assert [(line["action"], line["result"]) for line in lines] == [("git_revert", "success")] * 2, lines
    assert any("before-" in action for action in lines[1]["actions"]), lines[1]
    assert not (project_root / "rollback.lock").exists()


def test_an_unhealthy_gate_returns_the_tree_or_leaves_it_for_the_orchestrator(repos, tmp_path):
    repo = repos()
    bad = repo.commit_bad()
    repo.write_version("good again")
    fixed = repo.commit_all("web good again")
    repo.deploy()
    wait_version(repo, "good again")
    inventory = ansible_run.write_inventory(tmp_path, repo.host_vars(tmp_path / "backups", **SHORT_GATE))

    # Standalone: the gate fails, the tree returns and web is rebuilt from it.
    run = ansible_run.run_playbook("rollback_code", inventory, extra_vars={"lastgood_git_ref": bad})
    assert run.rc != 0
    msg = run.failure_msg()
    assert "code rolled back, but the stack is not healthy" in msg and "the tree is back at %s" % fixed in msg, msg
    assert repo.head() == fixed and repo.status() == "" and repo.tags() == []
    assert run.outcome()["healthy"] is False and run.outcome()["restored"] is True
    wait_version(repo, "good again")

    # For an orchestrator (report=false): no failure, healthy=false, the tree stays at the target.
    tasks = [
        {"name": "code tier", "ansible.builtin.include_role": {"name": "lastgood.rollback.rollback_code"},
         "vars": {"rollback_code_report": False, "rollback_code_git_ref": bad}},
        {"name": "result", "ansible.builtin.debug": {"var": "rollback_code_result"}},
    ]
    run = ansible_run.run_tasks(inventory, tasks, tmp_path)
    assert run.rc == 0, run.describe()
    result = run.result("result")["rollback_code_result"]
    assert result["healthy"] is False and result["changed"] is True
    assert result["commit_before"] == fixed and result["commit_after"] == bad == repo.head()
    assert result["services_changed"] == ["web"] and result["restored"] is False
    assert BACKUP_REF.fullmatch(result["backup_ref"]) and repo.refs()[result["backup_ref"]] == fixed
    assert "lastgood_outcome" not in run.global_custom_stats
    assert repo.tags() == []


@contextlib.contextmanager
def snapshotted_then_broken(repos, docker_client, tmp_path, name):
    """A code project snapshotted at its good commit, then running a bad commit (web never turns
    healthy); the snapshot's pins are removed afterwards."""
    repo = repos()
    backup_root = tmp_path / "backups"
    inventory = ansible_run.write_inventory(tmp_path, repo.host_vars(backup_root), name="%s-%s.yml" % (repo.project, name))
    try:
        snapshot = ansible_run.run_playbook("snapshot", inventory)
        assert snapshot.rc == 0, snapshot.describe()
        scene = types.SimpleNamespace(repo=repo, backup_root=backup_root, inventory=inventory, good=repo.head(),
                                      snapshot_id=snapshot.outcome()["snapshot_id"])
        scene.bad = repo.commit_bad()
        repo.deploy()
        wait_version(repo, "bad")
        yield scene
    finally:
        ansible_run.remove_snapshot_pins(docker_client, backup_root)


def test_the_orchestrator_picks_the_code_tier_for_a_bad_commit(repos, docker_client, tmp_path):
    """rollback.yml with tier auto: another commit is a code difference, so the code tier runs,
    to the snapshot's commit even with a `lastgood_git_ref` left in the inventory (that variable
    is for rollback_code.yml on its own; the orchestrator's plan names the snapshot's commit)."""
    with snapshotted_then_broken(repos, docker_client, tmp_path, "auto") as scene:
        repo = scene.repo
        inventory = ansible_run.write_inventory(tmp_path, repo.host_vars(scene.backup_root, lastgood_git_ref=scene.bad),
                                                name=repo.project + "-auto-ref.yml")
        run = ansible_run.run_playbook("rollback", inventory, extra_vars=SHORT_GATE)
        assert run.rc == 0, run.describe()
        outcome = run.outcome()
        assert "code" in outcome["planned_attempts"][0] and outcome["planned_attempts"][-1] == ["full"]
        assert outcome["result"] == "success" and outcome["escalations"] == 0 and "code" in outcome["tiers"]
        assert repo.head() == scene.good and any(BACKUP_REF.fullmatch(ref) for ref in repo.refs())
        assert scene.bad in repo.out("log", "--all", "--format=%H")
        wait_version(repo, "good")


def test_emergency_recovery_falling_back_to_the_code_rebuilds_what_is_built_from_source(repos, docker_client, tmp_path):
    """No snapshot verifies (a file copy damaged): emergency recovery moves the tree to the commit the
    snapshot records, leaves the data as it is, and rebuilds web, which is built from source; moved
    alone, the tree would leave web running the bad code."""
    with snapshotted_then_broken(repos, docker_client, tmp_path, "emergency") as scene:
        copies = scene.backup_root / scene.repo.project / scene.snapshot_id / "files"
        damaged = next(path for path in sorted(copies.rglob("*")) if path.is_file())
        damaged.write_bytes(damaged.read_bytes() + b"# damaged\n")

        run = ansible_run.run_playbook("emergency_recover", scene.inventory, timeout=600)
        assert run.rc == 0, run.describe()
        outcome = run.outcome()
        assert outcome["snapshot_id"] == "" and outcome["data_left_as_is"] is True
        assert outcome["fallback_commit"]["commit"] == scene.good and scene.repo.head() == scene.good
        wait_version(scene.repo, "good")
        assert outcome["healthy"] is True
