# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of module_utils/_postgres.py: the parts that need no server.

Quoting, names, the dump record, plans of settings and privileges, digests and the program
runner. Everything that talks to PostgreSQL is tested against real servers in
tests/integration/test_postgres_direct.py and test_postgres_compose.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

# The module composes its SQL with psycopg2.sql: without psycopg2 (ansible-test's unit venv unless
# tests/unit/requirements.txt names psycopg2-binary) there is nothing to test here.
psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 (psycopg2-binary) is not installed")

from psycopg2 import sql  # noqa: E402  pylint: disable=wrong-import-position
from psycopg2.extensions import parse_dsn  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.lastgood.rollback.plugins.module_utils import _postgres as pg  # noqa: E402  pylint: disable=wrong-import-position

AWKWARD = ['we"ird', "semi;colon", "two..dots", "space name", "it's", "back\\slash", "Ünïcødé", "x=y", "-dash"]


# -- identifiers and SQL text ---------------------------------------------------------------------

@pytest.mark.parametrize("name", AWKWARD + ["a" * 63])
def test_identifiers_postgres_accepts_are_accepted(name):
    assert pg.check_identifier(name) == name


@pytest.mark.parametrize("name, reason", [
    ("", "non-empty"), (None, "non-empty"), ("a\x00b", "NUL"), ("a" * 64, "longer than 63 bytes"),
    ("é" * 32, "longer than 63 bytes"),  # 64 bytes in UTF-8: would be truncated by the server
])
def test_identifiers_postgres_would_mangle_are_refused(name, reason):
    with pytest.raises(pg.PostgresError, match=reason):
        pg.check_identifier(name)


def test_render_quotes_identifiers_and_literals_like_postgres():
    statement = sql.SQL("ALTER DATABASE {} RENAME TO {}; COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier('we"ird; DROP DATABASE x; --'), sql.Identifier("b"),
        sql.Identifier("b"), sql.Literal("it's a \\ test"))
    assert pg.render(statement) == (
        'ALTER DATABASE "we""ird; DROP DATABASE x; --" RENAME TO "b"; '
        "COMMENT ON DATABASE \"b\" IS 'it''s a \\ test'")


def test_render_qualified_identifier_and_scalars():
    assert pg.render(sql.Identifier("Sales Data", 'Q1 "totals"')) == '"Sales Data"."Q1 ""totals"""'
    assert pg.render(sql.SQL("SELECT {}, {}, {}, {}").format(
        sql.Literal(5), sql.Literal(None), sql.Literal(True), sql.Literal(False))) == "SELECT 5, NULL, true, false"


def test_render_refuses_unknown_parts():
    with pytest.raises(TypeError):
        pg.render(sql.Placeholder("x"))


@pytest.mark.parametrize("name", AWKWARD + ["host=evil port=1", "a'b\\'c"])
def test_conninfo_dbname_is_read_back_as_the_name_alone(name):
    # libpq's own parser (no server involved) must see exactly one key: dbname, the name itself.
    assert parse_dsn(pg.conninfo_dbname(name)) == {"dbname": name}


# -- settings and privileges ----------------------------------------------------------------------

@pytest.mark.parametrize("value, items", [
    ('"$user", public', ["$user", "public"]),
    ('"a,b", c', ["a,b", "c"]),
    ('"say ""hi""",x', ['say "hi"', "x"]),
    ("public", ["public"]),
    ('""', [""]),
    ("", [""]),
])
def test_split_guc_list_reads_what_postgres_stores(value, items):
    assert pg.split_guc_list(value) == items


def test_split_guc_list_refuses_broken_syntax():
    with pytest.raises(ValueError):
        pg.split_guc_list('"a" b')


def test_settings_are_copied_with_list_and_scalar_quoting():
    assert pg.render(pg.setting_statement("new", "", 'search_path="$user", public, "Sales Data"')) == (
        "ALTER DATABASE \"new\" SET \"search_path\" TO '$user', 'public', 'Sales Data'")
    assert pg.render(pg.setting_statement("new", "app", "work_mem=8MB")) == (
        "ALTER ROLE \"app\" IN DATABASE \"new\" SET \"work_mem\" TO '8MB'")
    # A value holding '=' keeps everything after the first one.
    assert pg.render(pg.setting_statement("new", "", "application_name=a=b")) == (
        "ALTER DATABASE \"new\" SET \"application_name\" TO 'a=b'")


def info(**overrides):
    base = dict(raw={"encoding_name": "UTF8", "datcollate": "C.UTF-8", "datctype": "C.UTF-8", "datlocprovider": "c",
                     "datconnlimit": -1},
                owner="shop owner", comment="the shop", tablespace="", size=1000, allow_connections=True,
                default_acl=True, acl=[], settings=[])
    base.update(overrides)
    return base


def test_create_database_copies_owner_encoding_locale_tablespace_and_limit():
    statement = pg.render(pg.create_database_statement("scratch", info(tablespace="fast disk", raw={
        "encoding_name": "UTF8", "datcollate": "de_DE.UTF-8", "datctype": "de_DE.UTF-8", "datlocprovider": "i",
        "daticulocale": "de-DE", "datconnlimit": 20}), "postgres"))
    assert statement == (
        'CREATE DATABASE "scratch" WITH TEMPLATE template0 OWNER "shop owner" ENCODING \'UTF8\' '
        "LC_COLLATE 'de_DE.UTF-8' LC_CTYPE 'de_DE.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' "
        'TABLESPACE "fast disk" CONNECTION LIMIT 20')


def test_create_database_without_a_live_one_uses_the_connecting_user():
    assert pg.render(pg.create_database_statement("scratch", None, "postgres")) == (
        'CREATE DATABASE "scratch" WITH TEMPLATE template0 OWNER "postgres"')


def test_privileges_are_reproduced_exactly():
    statements = [pg.render(s) for s in pg.property_statements("new", info(
        default_acl=False,
        acl=[("", "TEMPORARY", "0"), ("shop owner", "CONNECT", "0"), ("app", "CONNECT", "1"), ("x", "BOGUS", "0")],
        settings=[("", "statement_timeout=5s")]))]
    assert statements == [
        'REVOKE ALL ON DATABASE "new" FROM PUBLIC',
        'REVOKE ALL ON DATABASE "new" FROM "shop owner"',
        'GRANT TEMPORARY ON DATABASE "new" TO PUBLIC',
        'GRANT CONNECT ON DATABASE "new" TO "shop owner"',
        'GRANT CONNECT ON DATABASE "new" TO "app" WITH GRANT OPTION',
        'ALTER DATABASE "new" SET "statement_timeout" TO \'5s\'',
    ]


def test_default_privileges_stay_default():
    assert pg.property_statements("new", info()) == []
    assert pg.property_statements("new", None) == []


# -- names of the databases a restore creates -------------------------------------------------------

def test_scratch_name_is_fixed_per_database_and_always_fits():
    assert pg.scratch_name("shop") == pg.scratch_name("shop")
    assert pg.scratch_name("shop") != pg.scratch_name("shop2")
    assert pg.scratch_name("x" * 63).startswith(pg.SCRATCH_PREFIX)
    assert len(pg.scratch_name("x" * 63)) <= pg.MAX_IDENTIFIER_BYTES


def test_safety_copy_name_and_suffixes():
    assert pg.safety_base_name("shop", "20261130T084512Z") == "shop_before_20261130T084512Z"
    existing = {"shop_before_s1", "shop_before_s1_2"}
    assert pg.safety_copy_name("shop", "s1", set()) == "shop_before_s1"
    assert pg.safety_copy_name("shop", "s1", existing) == "shop_before_s1_3"


def test_long_database_names_get_a_shortened_unique_safety_name():
    first = pg.safety_base_name("a" * 63, "20261130T084512Z")
    second = pg.safety_base_name("a" * 62 + "b", "20261130T084512Z")
    assert first != second
    for name in (first, second, pg.safety_copy_name("ü" * 31, "20261130T084512Z", set())):
        assert len(name.encode("utf-8")) <= pg.MAX_IDENTIFIER_BYTES - 3
        assert name.endswith("_before_20261130T084512Z")
        pg.check_identifier(name + "_99")


def test_safety_copies_finds_only_ours():
    existing = {"shop_before_s1", "shop_before_s1_2", "shop_before_s10", "shop_before_s1x", "shop", "xshop_before_s1"}
    assert pg.safety_copies("shop", "s1", existing) == ["shop_before_s1", "shop_before_s1_2"]


def test_advisory_key_is_a_stable_signed_64_bit_number():
    key = pg.advisory_key("shop")
    assert key == pg.advisory_key("shop") != pg.advisory_key("shop2")
    assert -2 ** 63 <= key < 2 ** 63


@pytest.mark.parametrize("allowed", [True, False])
def test_scratch_marker_round_trip(allowed):
    marker = pg.scratch_marker('we"ird', "s1", allowed)
    assert pg.marker_allows_connections(marker) is allowed
    assert '"we""ird"' in marker


def test_no_marker_means_unknown():
    assert pg.marker_allows_connections("") is None
    assert pg.marker_allows_connections(None) is None


# -- the dump record and the checks on it ---------------------------------------------------------

def recorded(**overrides):
    base = dict(sha256="a" * 64, tables={"public.a": 3}, format="custom")
    base.update(overrides)
    return base


def test_check_recorded_accepts_a_dump_record():
    assert pg.check_recorded(recorded()) == "custom"
    assert pg.check_recorded(recorded(format="directory", tables={})) == "directory"


@pytest.mark.parametrize("record, reason", [
    ("nope", "must be the dict"),
    (recorded(sha256="abc"), "no valid sha256"),
    (recorded(sha256=None), "no valid sha256"),
    (recorded(tables=None), "no tables mapping"),
    (recorded(tables={"public.a": "many"}), "not a number"),
    (recorded(tables={"public.a": -1}), "not a number"),
    (recorded(format="tar"), "format 'tar'"),
])
def test_check_recorded_refuses_what_cannot_be_verified(record, reason):
    with pytest.raises(pg.PostgresError, match=reason):
        pg.check_recorded(record)


def test_compare_tables_names_every_kind_of_difference():
    assert pg.compare_tables({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    problems = pg.compare_tables({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 0})
    assert problems == ["missing tables: c", "unexpected tables: d", "b has 5 rows, recorded 2"]


def test_space_needed_adds_wal_only_on_the_same_filesystem():
    gib = 1024 ** 3
    assert pg.space_needed(gib, False, gib) == int(gib * pg.SPACE_FACTOR)
    assert pg.space_needed(gib, True, gib // 2) == int(gib * pg.SPACE_FACTOR) + gib // 2
    assert pg.space_needed(0, True, gib) == 0


def test_human_bytes():
    assert pg.human_bytes(512) == "512 B"
    assert pg.human_bytes(1536) == "1.5 KiB"
    assert pg.human_bytes(3 * 1024 ** 3) == "3.0 GiB"


def test_directory_digest_is_the_sha256_of_a_sha256sum_listing(tmp_path):
    (tmp_path / "toc.dat").write_bytes(b"toc")
    (tmp_path / "3001.dat.gz").write_bytes(b"data")
    listing = "".join("%s  %s\n" % (hashlib.sha256(content).hexdigest(), name)
                      for name, content in sorted([("toc.dat", b"toc"), ("3001.dat.gz", b"data")]))
    assert pg.directory_digest(str(tmp_path)) == (hashlib.sha256(listing.encode()).hexdigest(), 7)
    (tmp_path / "3001.dat.gz").write_bytes(b"dbta")
    assert pg.directory_digest(str(tmp_path))[0] != hashlib.sha256(listing.encode()).hexdigest()


def test_directory_digest_refuses_nested_entries(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(pg.PostgresError, match="unexpected entry sub"):
        pg.directory_digest(str(tmp_path))


def test_safe_file_name_keeps_plain_names_and_disambiguates_others():
    assert pg.safe_file_name("shop_2") == "shop_2"
    odd = pg.safe_file_name("../we ird")
    assert "/" not in odd and not odd.startswith(".")
    assert odd != pg.safe_file_name("../we_ird")


# -- running programs -------------------------------------------------------------------------------

def test_command_scrubs_the_password_from_its_output():
    secret = "s3cret-Password"
    script = "import sys; print('out %s'); sys.stderr.write('err %s\\n'); sys.exit(3)" % (secret, secret)
    proc = pg.Command([sys.executable, "-c", script], dict(os.environ), lambda text: text.replace(secret, pg.MASK))
    rc, out, err = proc.wait()
    assert (rc, out.strip(), err.strip()) == (3, "out ********", "err ********")
    error = pg.command_error("pg_restore", ["pg_restore"], rc, out, err)
    assert error.msg == "pg_restore failed (rc 3): err ********"
    assert error.result["rc"] == 3 and secret not in json.dumps(error.result)


def test_command_error_names_the_signal_of_a_killed_program():
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    proc = pg.Command([sys.executable, "-c", script], dict(os.environ), lambda text: text)
    rc, out, err = proc.wait()
    assert rc == -9
    assert pg.command_error("pg_restore", ["pg_restore"], rc, out, err).msg == "pg_restore was killed by signal 9"


def test_missing_program_is_one_line():
    with pytest.raises(pg.PostgresError, match="cannot run no-such-program-here"):
        pg.Command(["/nonexistent/no-such-program-here"], {}, lambda text: text)


def test_last_line_picks_the_telling_line():
    stderr = ('pg_restore: error: COPY failed for table "fill": ERROR:  could not extend file "base/1/2": '
              "No space left on device\nHINT:  Check free disk space.\nCONTEXT:  COPY fill, line 34823\n")
    assert pg.last_line(stderr) == ('pg_restore: error: COPY failed for table "fill": ERROR: could not extend file '
                                    '"base/1/2": No space left on device')
    assert pg.last_line("docker: something odd\nservice \"db\" is not running\n") == 'service "db" is not running'
    assert pg.last_line("") == "no error output"


# -- a full read split over several processes --------------------------------------------------------

LISTING = """;
; Archive created at 2026-11-30 09:42:24 UTC
;
214; 1259 16414 TABLE public customers postgres
216; 1259 16428 TABLE public events postgres
3363; 0 16414 TABLE DATA public customers postgres
3365; 0 16428 TABLE DATA public events postgres
3366; 0 16435 TABLE DATA public notes postgres
3364; 0 16421 TABLE DATA public orders postgres
3367; 0 0 BLOBS - BLOBS
3210; 2606 16420 CONSTRAINT public customers customers_pkey postgres
3208; 1259 16445 INDEX public customers_email_idx postgres
"""
ROWS = {"public.customers": 420000, "public.events": 1750000, "public.notes": 560000, "public.orders": 1400000}


def entries(text):
    return [line for line in text.splitlines() if line and not line.startswith(";")]


def test_split_toc_covers_every_entry_once_and_balances_by_rows():
    parts = pg.split_toc(LISTING, ROWS, 2)
    assert len(parts) == 2
    lines = [line for part in parts for line in entries(part)]
    assert sorted(lines) == sorted(entries(LISTING))  # every entry, none twice
    data = [[line.split()[6] if " TABLE DATA " in line else "BLOBS" for line in entries(part)
             if " TABLE DATA " in line or " BLOBS " in line] for part in parts]
    # Largest first into the lightest list; BLOBS weighs the median of the known tables (1.4M):
    # events 1.75M | orders 1.4M, BLOBS 1.4M | notes 0.56M -> 2.31M | customers 0.42M -> 2.73M vs 2.8M.
    assert data == [["events", "notes", "customers"], ["orders", "BLOBS"]]
    assert "INDEX public customers_email_idx" in parts[0] and "TABLE public events" in parts[0]


@pytest.mark.parametrize("parts", [0, 1])
def test_split_toc_does_not_split_for_one_process(parts):
    assert pg.split_toc(LISTING, ROWS, parts) == []


def test_split_toc_needs_two_data_entries():
    single = "214; 1259 16414 TABLE public a postgres\n3363; 0 16414 TABLE DATA public a postgres\n"
    assert pg.split_toc(single, {"public.a": 5}, 4) == []


def test_split_toc_never_makes_more_lists_than_data_entries():
    parts = pg.split_toc(LISTING, ROWS, 16)
    assert len(parts) == 5
    assert all(entries(part) for part in parts)
