# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: dotenv_value
short_description: A value written so that docker compose reads it back from a .env file as it is
version_added: 0.2.0
author: lastgood.rollback contributors
description:
  - >-
    Docker compose interpolates C($NAME) and C(${NAME}) in an unquoted C(.env) value and ends it at a space followed
    by C(#). A password such as C(Sup3r$ecret) written as it is reaches the container as C(Sup3r).
  - >-
    A value made only of letters, digits and the characters C(_./:@%+,=-) (an image reference, a number, a tag) is
    returned as it is. Any other value is single-quoted, where compose reads every character literally, with each
    single quote written as a backslash and a quote.
  - >-
    A value compose cannot read back from single quotes (one that ends with a backslash or holds a backslash before a
    quote) or one with a line break is refused with an error that names no part of it (values may be secrets).
positional: _input
options:
  _input:
    description: The value.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Set a .env value that may hold $, # or spaces
  ansible.builtin.lineinfile:
    path: /srv/shop/.env
    regexp: "^DB_PASSWORD="
    line: "DB_PASSWORD={{ new_password | lastgood.rollback.dotenv_value }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: The value as it is, or single-quoted.
  type: str
"""

import re

from ansible.errors import AnsibleFilterError

_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")


def unwritable(text):
    """Why `text` cannot be written as a .env value compose reads back, or None."""
    if "\n" in text or "\r" in text:
        return "it holds a line break"
    if text.endswith("\\") or "\\'" in text:
        return "it ends with a backslash or holds one before a quote"
    return None


def dotenv_value(value):
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    why = unwritable(text)
    if why:
        raise AnsibleFilterError("this value cannot be written to a .env file: %s" % why)
    return "'%s'" % text.replace("'", "\\'")


class FilterModule:
    def filters(self):
        return {"dotenv_value": dotenv_value}
