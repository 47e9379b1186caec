"""Make `ansible_collections.lastgood.rollback` importable under plain pytest.

ansible-test sets the path up itself; in the checkout the collection is reachable through
the link .collections/ansible_collections/lastgood/rollback -> the repository root
(scripts/setup-venv.sh makes it).
"""

from __future__ import annotations

import importlib.util
import os
import sys

if importlib.util.find_spec("ansible_collections") is None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, ".collections"))
