"""The documentation: ansible-doc renders every module and role with examples, antsibull-docs and
antsibull-changelog accept the collection, and the runbooks name only playbooks, variables and
documents that exist.

No Docker needed: ansible-doc, antsibull-docs and antsibull-changelog run on the checkout (through
the .collections link that ansible.cfg points Ansible at) or on a temporary copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
COLLECTION_LINK = REPO_ROOT / ".collections" / "ansible_collections" / "lastgood" / "rollback"
FQCN = "lastgood.rollback"
DOCS = REPO_ROOT / "docs"
RUNBOOKS = DOCS / "runbooks"
RUNBOOK_NAMES = ["rollback", "config", "images", "code", "full", "deploy", "emergency", "security_breach"]

MODULES = sorted(path.stem for path in (REPO_ROOT / "plugins" / "modules").glob("*.py") if not path.stem.startswith("_"))
FILTERS = sorted(path.stem for path in (REPO_ROOT / "plugins" / "filter").glob("*.py"))
ROLES = sorted(path.name for path in (REPO_ROOT / "roles").iterdir() if (path / "meta" / "argument_specs.yml").exists())
PLAYBOOKS = sorted(path.stem for path in (REPO_ROOT / "playbooks").glob("*.yml"))
# Roles and playbooks whose owners are still writing them; their examples and runbooks come with them.
# Shrink these sets, never grow them.
EXAMPLES_PENDING = {role for role in ROLES if role.startswith("emergency")}
RUNBOOKS_PENDING = set()


def _env():
    env = dict(os.environ)
    env["PATH"] = "%s:%s" % (VENV_BIN, env.get("PATH", ""))
    env["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    return env


def _run(args, cwd=REPO_ROOT, env=None, timeout=300):
    return subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout, check=False)


def _tool(name):
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail("%s is not installed in .venv: run `make setup` (requirements-dev.txt)" % name)
    return str(path)


# --- ansible-doc --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_docs():
    run = _run([_tool("ansible-doc"), "--json"] + ["%s.%s" % (FQCN, name) for name in MODULES])
    assert run.returncode == 0 and "ERROR" not in run.stderr, run.stderr
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def role_docs():
    docs = {}
    for role in ROLES:
        run = _run([_tool("ansible-doc"), "--json", "-t", "role", "%s.%s" % (FQCN, role)])
        assert run.returncode == 0 and "ERROR" not in run.stderr, "%s: %s" % (role, run.stderr)
        docs[role] = json.loads(run.stdout)["%s.%s" % (FQCN, role)]
    return docs


def _tasks_using(examples, fqcn):
    found = []

    def walk(node):
        if isinstance(node, dict):
            if fqcn in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(examples)
    return found


@pytest.mark.parametrize("name", MODULES)
def test_module_renders_with_examples(module_docs, name):
    entry = module_docs.get("%s.%s" % (FQCN, name))
    assert entry, "ansible-doc returned nothing for %s.%s" % (FQCN, name)
    assert entry["doc"]["short_description"] and entry["doc"]["options"] is not None
    examples = yaml.safe_load(entry["examples"] or "")
    assert isinstance(examples, list) and examples, "%s has no EXAMPLES" % name
    assert _tasks_using(examples, "%s.%s" % (FQCN, name)), "the EXAMPLES of %s never call %s.%s" % (name, FQCN, name)
    assert entry["return"] is not None, "%s has no RETURN" % name


@pytest.mark.parametrize("name", FILTERS)
def test_filter_renders_with_examples(name):
    run = _run([_tool("ansible-doc"), "--json", "-t", "filter", "%s.%s" % (FQCN, name)])
    assert run.returncode == 0 and "ERROR" not in run.stderr, run.stderr
    entry = json.loads(run.stdout)["%s.%s" % (FQCN, name)]
    assert entry["doc"]["short_description"] and entry["return"]
    assert "%s.%s" % (FQCN, name) in (entry["examples"] or ""), "the EXAMPLES of %s never use it" % name


def test_modules_render_as_text():
    run = _run([_tool("ansible-doc")] + ["%s.%s" % (FQCN, name) for name in MODULES])
    assert run.returncode == 0 and "ERROR" not in run.stderr, run.stderr
    sections = re.split(r"^> MODULE ", run.stdout, flags=re.M)[1:]
    assert len(sections) == len(MODULES)
    for section in sections:
        assert "\nEXAMPLES:" in section and "\nRETURN VALUES:" in section, section.split("\n", 1)[0]


@pytest.mark.parametrize("role", ROLES)
def test_role_renders_with_examples(role_docs, role):
    main = role_docs[role]["entry_points"]["main"]
    assert main["short_description"] and main["description"]
    for option in main.get("options") or {}:
        assert option.startswith(role + "_"), "option %s of role %s is not prefixed with the role name" % (option, role)
    if role in EXAMPLES_PENDING and not main.get("examples"):
        pytest.skip("examples pending: the role's owner is still writing it")
    assert main.get("examples"), "role %s has no examples (argument_specs.main.examples)" % role
    examples = yaml.safe_load(main["examples"])
    assert isinstance(examples, list) and examples
    uses = _tasks_using(examples, "role") + _tasks_using(examples, "name")
    assert any(str(task.get("role", task.get("name"))) == "%s.%s" % (FQCN, role) for task in uses), \
        "the examples of %s never use %s.%s" % (role, FQCN, role)
    # Role options the examples set must exist (a renamed option leaves a stale example behind).
    options = set(main.get("options") or {})
    used = set(re.findall(r"\b(%s_[a-z0-9_]+)\s*:" % re.escape(role), main["examples"]))
    assert used <= options, "examples of %s use unknown options %s" % (role, sorted(used - options))
    text = _run([_tool("ansible-doc"), "-t", "role", "%s.%s" % (FQCN, role)])
    assert text.returncode == 0 and "\nEXAMPLES:" in text.stdout, text.stderr


# --- antsibull-docs and antsibull-changelog -----------------------------------------------------

def test_antsibull_docs_lint_collection_docs():
    assert (COLLECTION_LINK / "galaxy.yml").exists(), "run `make setup`: the .collections link is missing"
    run = _run([_tool("antsibull-docs"), "lint-collection-docs", "--plugin-docs",
                "--validate-collection-refs", "all", "--disallow-unknown-collection-refs", "."],
               cwd=COLLECTION_LINK)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_changelog_fragments_lint():
    run = _run([_tool("antsibull-changelog"), "lint"])
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_changelog_release_generates(tmp_path):
    """`antsibull-changelog release` for galaxy.yml's version, in a copy: the fragments become the release."""
    copy = tmp_path / "ansible_collections" / "lastgood" / "rollback"
    ignore = shutil.ignore_patterns(".venv", ".collections", ".git", "tests", "__pycache__", "*.tar.gz", "demo", "bench")
    shutil.copytree(REPO_ROOT, copy, ignore=ignore, symlinks=True)
    version = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["version"]
    fragments = {path.name: yaml.safe_load(path.read_text()) for path in (copy / "changelogs" / "fragments").glob("*.yml")}
    assert fragments
    env = _env()
    env.pop("ANSIBLE_CONFIG")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp_path)
    run = _run([_tool("antsibull-changelog"), "release", "--version", version, "--date", "2026-12-01"], cwd=copy, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    changes = yaml.safe_load((copy / "changelogs" / "changelog.yaml").read_text())
    release = changes["releases"][version]
    assert sorted(release["fragments"]) == sorted(fragments)
    assert not list((copy / "changelogs" / "fragments").glob("*.yml")), "the fragments were not consumed"
    config = yaml.safe_load((copy / "changelogs" / "config.yaml").read_text())
    for output in config["output"]:
        text = (copy / output["file"]).read_text()
        assert "v%s" % version in text.replace("\\", ""), output["file"]
    markdown = (copy / "CHANGELOG.md").read_text().replace("\\", "")
    for fragment, entries in fragments.items():
        for section, items in entries.items():
            if section == "trivial":
                continue
            for item in items if isinstance(items, list) else [items]:
                assert " ".join(item.split()[:4]).replace("``", "") in markdown.replace("<code>", "").replace("</code>", ""), \
                    "%s: %r missing from CHANGELOG.md" % (fragment, item[:60])
    run = _run([_tool("antsibull-changelog"), "lint-changelog-yaml", "changelogs/changelog.yaml"], cwd=copy, env=env)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


# --- the runbooks ---------------------------------------------------------------------------

def _known_variables():
    """lastgood_* names a role or playbook reads: the collection-wide host and extra variables,
    plus what the outcome role publishes with set_stats (lastgood_outcome: the job's artifacts)."""
    names = set()
    sources = list((REPO_ROOT / "roles").glob("*/defaults/*.yml")) + list((REPO_ROOT / "playbooks").glob("*.yml"))
    for path in sources:
        names |= set(re.findall(r"\blastgood_[a-z0-9_]+", path.read_text()))
    published = (REPO_ROOT / "roles" / "outcome" / "tasks" / "main.yml").read_text()
    names |= set(re.findall(r"'(lastgood_[a-z0-9_]+)'\s*:", published))
    return names


def _role_options():
    options = {}
    for role in ROLES:
        spec = yaml.safe_load((REPO_ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
        for entry in spec["argument_specs"].values():
            options.update(entry.get("options") or {})
    return options


def _documents():
    return [DOCS / "README.md"] + [RUNBOOKS / ("%s.md" % name) for name in RUNBOOK_NAMES]


def _code(text):
    """Fenced code blocks and inline code spans: where commands and variable names are written."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    return blocks + re.findall(r"`([^`\n]+)`", prose)


def _slug(heading):
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return slug.replace(" ", "-")


def test_every_runbook_exists_with_its_sections():
    for name in RUNBOOK_NAMES:
        text = (RUNBOOKS / ("%s.md" % name)).read_text()
        headings = [line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("## ")]
        for wanted in ("when to use it", "the command", "what it does", "how to verify", "if it fails"):
            assert any(heading.startswith(wanted) for heading in headings), "%s.md lacks a section %r" % (name, wanted)
        if name in ("config", "images", "code", "full"):
            assert "how to undo" in headings, "%s.md lacks 'How to undo'" % name
            assert any(heading.startswith("what the old runbook") for heading in headings), name
        assert "ansible-playbook -i <inventory> playbooks/" in text, name


def test_runbooks_name_only_what_exists():
    known = _known_variables()
    options = _role_options()
    collection_names = set(MODULES) | set(ROLES) | set(PLAYBOOKS)
    problems = []
    for path in _documents():
        for code in _code(path.read_text()):
            for playbook in re.findall(r"\bplaybooks/([A-Za-z0-9_]+)\.yml", code):
                if playbook not in PLAYBOOKS:
                    problems.append("%s: playbooks/%s.yml does not exist" % (path.name, playbook))
            for name in re.findall(r"\blastgood\.rollback\.([a-z0-9_]+)", code):
                if name not in collection_names:
                    problems.append("%s: lastgood.rollback.%s is no playbook, role or module" % (path.name, name))
            for variable in re.findall(r"\blastgood_[a-z0-9_]+", code):
                if variable not in known:
                    problems.append("%s: %s is read by no role or playbook" % (path.name, variable))
            for variable in re.findall(r"(?:^|\s)-e\s+([a-z][a-z0-9_]*)=", code):
                if variable not in known and variable not in options:
                    problems.append("%s: -e %s is no lastgood_* variable nor role option" % (path.name, variable))
            for tier in re.findall(r"lastgood_tier=([a-z]+)", code):
                if tier not in options["rollback_tier"]["choices"]:
                    problems.append("%s: lastgood_tier=%s is not a tier" % (path.name, tier))
    assert not problems, "\n".join(problems)


def test_runbooks_cover_every_playbook():
    text = "\n".join(path.read_text() for path in _documents())
    missing = [name for name in PLAYBOOKS if "playbooks/%s.yml" % name not in text and name not in RUNBOOKS_PENDING]
    assert not missing, "no runbook tells when to run %s" % missing


def test_links_between_documents_resolve():
    problems = []
    documents = _documents()
    for path in documents:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            file_part, anchor = (target.split("#", 1) + [""])[:2]
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append("%s: link to %s: no such file" % (path.name, target))
                continue
            if anchor and linked.suffix == ".md":
                slugs = {_slug(line.lstrip("#")) for line in linked.read_text().splitlines() if line.startswith("#")}
                if anchor not in slugs:
                    problems.append("%s: link to %s: no such heading" % (path.name, target))
    index = (DOCS / "README.md").read_text()
    for name in RUNBOOK_NAMES:
        assert "runbooks/%s.md" % name in index, "docs/README.md does not link %s.md" % name
    assert "(awx.md)" in index and "(prometheus/README.md)" in index
    assert not problems, "\n".join(problems)
