"""The AWX data in awx/ against the collection: every survey field is read by a role of its
template's playbook and every answer the survey can give passes that role's argument spec.

A survey variable reaches a role option through the role's defaults
(``<role>_<x>: "{{ lastgood_<x> | default(...) }}"``) or through ``survey_variable_map`` in
awx/job_templates.yml. The answers are what AWX puts into the job's extra vars: strings for
text, password and multiple choice fields, integers and floats for numbers, a list of strings
for multiple select. They are checked with ansible's ArgumentSpecValidator, which is what a
role's argument spec validation runs when the role starts.

Templates whose playbook does not exist yet are skipped with the reason, and checked as soon
as the playbook is there.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

REPO_ROOT = Path(__file__).resolve().parents[2]
AWX_DIR = REPO_ROOT / "awx"
COLLECTION = "lastgood.rollback"
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
# Survey field types that may feed an argument spec type.
COMPATIBLE = {
    "str": {"text", "textarea", "password", "multiplechoice"},
    "raw": SURVEY_TYPES,
    "int": {"integer", "multiplechoice"},
    "float": {"integer", "float", "multiplechoice"},
    # A free text field for a boolean invites "maybe": booleans are a choice.
    "bool": {"multiplechoice"},
    "list": {"multiselect"},
}
SPEC_KEYS = {"type", "elements", "choices", "options", "required", "default", "no_log", "aliases"}
_LASTGOOD_VAR = re.compile(r"\{\{\s*(lastgood_\w+)")


def load_yaml(path):
    return yaml.safe_load(Path(path).read_text())


def templates_data():
    return load_yaml(AWX_DIR / "job_templates.yml")


def playbook_roles(playbook_path):
    """Role names (without the collection prefix) the playbook's plays list under roles:."""
    roles = []
    for play in load_yaml(playbook_path) or []:
        for entry in play.get("roles") or []:
            name = entry["role"] if isinstance(entry, dict) else entry
            roles.append(name[len(COLLECTION) + 1:] if name.startswith(COLLECTION + ".") else name)
    return roles


def role_options(role):
    """{option: argument spec entry} of the role's main entry point."""
    specs = load_yaml(REPO_ROOT / "roles" / role / "meta" / "argument_specs.yml")
    return specs["argument_specs"]["main"]["options"]


def role_variable_options(role):
    """{lastgood_<x>: option} from the role's defaults: the variables its options default to."""
    found = {}
    defaults = load_yaml(REPO_ROOT / "roles" / role / "defaults" / "main.yml") or {}
    for option, value in defaults.items():
        if isinstance(value, str):
            for variable in _LASTGOOD_VAR.findall(value):
                found.setdefault(variable, option)
    return found


def survey_answers(field):
    """Every answer the field can give, as AWX puts it into the extra vars."""
    kind = field["type"]
    choices = field.get("choices") or []
    if isinstance(choices, str):  # older AWX: one choice a line
        choices = [line for line in choices.splitlines() if line]
    answers = []
    if kind == "multiplechoice":
        answers = [str(choice) for choice in choices]
    elif kind == "multiselect":
        answers = [[str(choice)] for choice in choices] + [[str(choice) for choice in choices]]
    elif kind in ("integer", "float"):
        convert = int if kind == "integer" else float
        answers = [convert(field[bound]) for bound in ("min", "max") if field.get(bound) is not None]
    if field.get("default") not in (None, ""):
        default = field["default"]
        if kind == "multiselect":
            default = [line for line in str(default).splitlines() if line] if isinstance(default, str) else default
        elif kind in ("integer", "float"):
            default = int(default) if kind == "integer" else float(default)
        else:
            default = str(default)
        answers.append(default)
    elif kind in ("text", "textarea", "password"):
        answers.append("")  # an empty, optional answer still reaches the role
    return answers


def spec_errors(option, spec, value):
    """The argument spec validation errors of `option: value` (empty when it passes)."""
    clean = {key: copy.deepcopy(item) for key, item in spec.items() if key in SPEC_KEYS}
    clean.pop("required", None)
    result = ArgumentSpecValidator({option: clean}).validate({option: value})
    return [str(error) for error in result.errors]


def check_template(template, data=None):
    """Problems of one job template, as sentences (empty when it is right)."""
    data = data if data is not None else templates_data()
    explicit = data.get("survey_variable_map") or {}
    problems = []
    if template.get("allow_simultaneous") is not False:
        problems.append("%s: allow_simultaneous must be false (two jobs must never change one stack at once)"
                        % template["name"])
    roles = playbook_roles(REPO_ROOT / template["playbook"])
    if not roles:
        problems.append("%s: %s lists no role" % (template["name"], template["playbook"]))
    options = {}  # option name -> (role, spec)
    by_variable = {}  # survey variable -> [option names]
    for role in roles:
        for option, spec in role_options(role).items():
            options[option] = (role, spec)
        for variable, option in role_variable_options(role).items():
            by_variable.setdefault(variable, []).append(option)
    for variable, option in explicit.items():
        if option in options:
            by_variable.setdefault(variable, []).append(option)
    survey = load_yaml(AWX_DIR / template["survey_spec_file"])
    if template.get("survey_enabled") and not survey.get("spec"):
        problems.append("%s: survey enabled without fields" % template["name"])
    for field in survey.get("spec") or []:
        variable = field.get("variable")
        where = "%s: survey field %s" % (template["name"], variable)
        if field.get("type") not in SURVEY_TYPES:
            problems.append("%s: unknown type %r" % (where, field.get("type")))
            continue
        targets = by_variable.get(variable)
        if not targets:
            problems.append("%s: no role of %s reads it (roles: %s)" % (where, template["playbook"], ", ".join(roles)))
            continue
        for option in targets:
            role, spec = options[option]
            spec_type = spec.get("type", "str")
            if field["type"] not in COMPATIBLE.get(spec_type, SURVEY_TYPES):
                problems.append("%s: a %s field cannot feed %s.%s of type %s" % (where, field["type"], role, option, spec_type))
            if spec.get("choices") and field["type"] != "multiplechoice":
                problems.append("%s: %s.%s takes one of %s: make it a multiplechoice" % (where, role, option, spec["choices"]))
            for answer in survey_answers(field):
                for error in spec_errors(option, spec, answer):
                    problems.append("%s: the answer %r fails %s.%s: %s" % (where, answer, role, option, error))
    return problems


def template_params():
    params = []
    for template in templates_data()["job_templates"]:
        marks = []
        if not (REPO_ROOT / template["playbook"]).is_file():
            marks.append(pytest.mark.skip(reason="%s does not exist yet" % template["playbook"]))
        params.append(pytest.param(template, id=template["name"], marks=marks))
    return params


@pytest.mark.parametrize("template", template_params())
def test_every_survey_field_passes_the_argument_spec_of_the_role_that_reads_it(template):
    assert check_template(template) == []


def test_the_templates_name_the_surveys_and_the_playbooks_they_need():
    data = templates_data()
    names = [template["name"] for template in data["job_templates"]]
    assert len(names) == len(set(names))
    for template in data["job_templates"]:
        assert (AWX_DIR / template["survey_spec_file"]).is_file(), template["name"]
        assert template["playbook"].startswith("playbooks/") and template["job_type"] in ("run", "check")
    playbooks = {template["playbook"] for template in data["job_templates"]}
    assert {"playbooks/snapshot.yml", "playbooks/rollback.yml", "playbooks/deploy.yml"} <= playbooks
    rollback = load_yaml(AWX_DIR / "surveys" / "rollback.yml")
    fields = {field["variable"]: field for field in rollback["spec"]}
    assert {"lastgood_tier", "lastgood_snapshot_id", "lastgood_confirm"} <= set(fields)
    assert fields["lastgood_tier"]["choices"] == ["auto", "config", "images", "code", "full"]
    # A destructive tier must be asked for: confirmation is off unless the operator picks it.
    assert fields["lastgood_confirm"]["default"] == "false"


def test_the_workflow_rolls_back_on_the_failure_edge():
    templates = {template["name"] for template in templates_data()["job_templates"]}
    for workflow in load_yaml(AWX_DIR / "workflows.yml")["workflow_job_templates"]:
        assert workflow["allow_simultaneous"] is False
        nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
        for node in nodes.values():
            assert node["unified_job_template"]["name"] in templates, node["identifier"]
            for edge in ("success_nodes", "failure_nodes", "always_nodes"):
                for target in (node.get("related") or {}).get(edge, []):
                    assert target["identifier"] in nodes, (node["identifier"], target)
        rollback = [name for name, node in nodes.items() if node["unified_job_template"]["name"] == "lastgood rollback"]
        assert len(rollback) == 1
        deploy = [node for node in nodes.values() if node["unified_job_template"]["name"] == "lastgood deploy"]
        assert len(deploy) == 1 and deploy[0]["related"]["failure_nodes"] == [{"identifier": rollback[0]}]
        assert not (nodes[rollback[0]].get("related") or {}), "the rollback node must be the end of the line"


def test_every_workflow_node_gets_the_answers_its_template_requires():
    """AWX launches a node with the node's extra_data and the workflow's survey answers, and
    answers a template's question with its default when neither does; a required question
    without a default would fail the node before it runs (the deploy node would always take the
    failure edge). The workflow's fields pass the argument spec of the deploy template's roles
    like any survey field."""
    templates = {template["name"]: template for template in templates_data()["job_templates"]}
    for workflow in load_yaml(AWX_DIR / "workflows.yml")["workflow_job_templates"]:
        assert workflow.get("survey_enabled") is True, workflow["name"]
        survey = load_yaml(AWX_DIR / workflow["survey_spec_file"])
        answered = {field["variable"] for field in survey["spec"]}
        for node in workflow["workflow_nodes"]:
            template = templates[node["unified_job_template"]["name"]]
            given = answered | set(node.get("extra_data") or {})
            required = {field["variable"] for field in load_yaml(AWX_DIR / template["survey_spec_file"])["spec"]
                        if field.get("required") and field.get("default") in (None, "")}
            assert required <= given, (workflow["name"], node["identifier"], sorted(required - given))
        deploy = dict(templates["lastgood deploy"], survey_spec_file=workflow["survey_spec_file"])
        assert check_template(deploy) == []


# -- the checker catches what it is there for ----------------------------------------------------

def snapshot_template(fields):
    """The snapshot job template and a survey of `fields` (an absolute survey_spec_file wins over awx/)."""
    template = dict(next(t for t in templates_data()["job_templates"] if t["playbook"] == "playbooks/snapshot.yml"))
    return template, {"name": "test", "description": "", "spec": fields}


@pytest.mark.parametrize("field, problem", [
    ({"variable": "lastgood_force", "type": "text", "default": "maybe"}, "a text field cannot feed snapshot.snapshot_force"),
    ({"variable": "lastgood_force", "type": "multiplechoice", "choices": ["false", "perhaps"]},
     "the answer 'perhaps' fails snapshot.snapshot_force"),
    ({"variable": "lastgood_keep_snapshots", "type": "text", "default": "ten"},
     "a text field cannot feed snapshot.snapshot_keep"),
    ({"variable": "lastgood_keep_snapshots", "type": "multiplechoice", "choices": ["5", "many"]},
     "the answer 'many' fails snapshot.snapshot_keep"),
    ({"variable": "lastgood_tier", "type": "multiplechoice", "choices": ["auto"]}, "no role of playbooks/snapshot.yml reads it"),
    ({"variable": "lastgood_snapshot_reason", "type": "slider"}, "unknown type 'slider'"),
], ids=["bool as text", "bool choice", "int as text", "int choice", "nobody reads it", "unknown type"])
def test_the_checker_names_a_wrong_field(field, problem, tmp_path):
    template, survey = snapshot_template([dict(field, question_name="q", required=False)])
    (tmp_path / "survey.yml").write_text(yaml.safe_dump(survey))
    problems = check_template(dict(template, survey_spec_file=str(tmp_path / "survey.yml")))
    assert any(problem in found for found in problems), problems


def test_the_checker_follows_the_explicit_map_and_the_concurrency_rule(tmp_path):
    template, survey = snapshot_template([{"question_name": "q", "variable": "awx_keep", "type": "integer",
                                           "required": False, "min": 0, "max": 3}])
    (tmp_path / "survey.yml").write_text(yaml.safe_dump(survey))
    template = dict(template, survey_spec_file=str(tmp_path / "survey.yml"))
    assert check_template(template, {"survey_variable_map": {"awx_keep": "snapshot_keep"}}) == []
    assert any("no role" in problem for problem in check_template(template, {}))
    assert any("allow_simultaneous" in problem
               for problem in check_template(dict(template, allow_simultaneous=True), {"survey_variable_map": {"awx_keep": "snapshot_keep"}}))
