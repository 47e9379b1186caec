# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""git, run as argument lists: the state a snapshot records."""

from __future__ import annotations


def git_state(module, directory):
    """{commit, branch, dirty, toplevel} of the work tree holding `directory`, or None."""
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
    status = run("status", "--porcelain", "--untracked-files=normal")
    return {
        "commit": commit,
        "branch": branch or None,
        "dirty": bool(status),
        "toplevel": toplevel,
    }
