# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dotenv_value filter: .env values docker compose reads back as they were given."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.lastgood.rollback.plugins.filter.dotenv_value import FilterModule, dotenv_value


@pytest.mark.parametrize("value, written", [
    ("registry.local:5000/shop/api:4.2", "registry.local:5000/shop/api:4.2"),
    (600, "600"),
    ("", ""),
    ("Sup3r$ecret", "'Sup3r$ecret'"),
    ("a b #c", "'a b #c'"),
    ("it's", "'it\\'s'"),
    ("C:\\path", "'C:\\path'"),
    ('say "hi"', "'say \"hi\"'"),
])
def test_plain_values_stay_and_others_are_single_quoted(value, written):
    assert dotenv_value(value) == written


@pytest.mark.parametrize("value", ["ends\\", "a\\'b", "two\nlines", "cr\r"])
def test_values_compose_cannot_read_back_are_refused_without_showing_them(value):
    with pytest.raises(AnsibleFilterError) as caught:
        dotenv_value(value)
    assert value not in str(caught.value)


def test_the_filter_is_registered():
    assert FilterModule().filters() == {"dotenv_value": dotenv_value}
