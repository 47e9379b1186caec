# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles' argument specs against each other: one lastgood_* variable, one type."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
FROM_VARIABLE = re.compile(r"^\{\{\s*(lastgood_[a-z0-9_]+)\s*\|")


def _types():
    """Per role option: the type its argument specs give it (every entry point)."""
    types = {}
    for spec_file in ROLES.glob("*/meta/argument_specs.yml"):
        role = spec_file.parents[1].name
        for entry in yaml.safe_load(spec_file.read_text())["argument_specs"].values():
            for option, spec in (entry.get("options") or {}).items():
                types.setdefault((role, option), set()).add(spec.get("type", "str"))
    return types


def test_every_role_option_fed_by_one_variable_accepts_the_same_type():
    """A host variable (lastgood_gate_deadline_s: 90.5) valid for one role must not be refused by another."""
    types = _types()
    readers = {}
    for defaults in ROLES.glob("*/defaults/main.yml"):
        role = defaults.parents[1].name
        for option, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            found = FROM_VARIABLE.match(value) if isinstance(value, str) else None
            if found and (role, option) in types:
                readers.setdefault(found.group(1), []).append((role, option))
    assert len(readers) > 30
    problems = []
    for variable, options in sorted(readers.items()):
        seen = {"%s.%s" % option: sorted(types[option]) for option in options}
        if len({tuple(each) for each in seen.values()}) > 1 or any(len(each) > 1 for each in seen.values()):
            problems.append("%s: %s" % (variable, seen))
    assert not problems, "\n".join(problems)
