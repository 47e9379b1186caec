"""The .env values the deploy writes (the dotenv_value filter), read back by the real docker
compose: every character as given, where an unquoted value would lose what follows a `$` or ` #`."""

from __future__ import annotations

import json
import sys

try:
    from . import pg_server, stacks
except ImportError:
    import pg_server
    import stacks

if str(pg_server.COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(pg_server.COLLECTIONS))

from ansible_collections.lastgood.rollback.plugins.filter.dotenv_value import dotenv_value  # noqa: E402

VALUES = [
    "lastgood-demo/app:v1",
    "600",
    "",
    "Sup3r$ecret",
    "${HOME} and $$ twice",
    "a b #not a comment",
    "it's",
    'say "hi"',
    "C:\\path\\n",
    "=leading equals=",
    "tab\there",
    "unicode: naïve ✓",
]


def test_compose_reads_every_written_value_back_as_given(tmp_path):
    keys = ["V%d" % index for index in range(len(VALUES))]
    (tmp_path / ".env").write_text("".join("%s=%s\n" % (key, dotenv_value(value)) for key, value in zip(keys, VALUES)))
    environment = "".join("      %s: ${%s}\n" % (key, key) for key in keys)
    (tmp_path / "compose.yaml").write_text(
        "services:\n  x:\n    image: lastgood-bench/busybox:1\n    network_mode: host\n    environment:\n" + environment)
    run = stacks.run(["docker", "compose", "--project-name", "lgdotenv", "config", "--format", "json"], cwd=tmp_path,
                     env=stacks.clean_env())
    assert "not set" not in run.stderr, run.stderr
    read = json.loads(run.stdout)["services"]["x"]["environment"]
    # compose writes its configuration back with each literal $ doubled, ready to be read again.
    assert {key: (read[key] or "").replace("$$", "$") for key in keys} == dict(zip(keys, VALUES))
