"""data_check against a real volume and a real PostgreSQL (the demo stack's db)."""

from __future__ import annotations

import secrets

import psycopg2
import pytest

import ansible_run


@pytest.fixture()
def volume(docker_client, demo_images):
    name = "lgt-datacheck-%s" % secrets.token_hex(4)
    docker_client.volumes.create(name)
    docker_client.containers.run("lastgood-bench/busybox:1", ["sh", "-c", "echo a > /data/a; mkdir /data/d; echo b > /data/d/b"],
                                 volumes={name: {"bind": "/data", "mode": "rw"}}, network_mode="none", remove=True)
    yield name
    docker_client.volumes.get(name).remove(force=True)


@pytest.fixture()
def inventory(tmp_path):
    return ansible_run.write_inventory(tmp_path, {})


def test_volume_files_present_then_missing(volume, inventory, tmp_path, docker_client):
    recorded = {volume: {"paths": [".", "a", "d", "d/b"]}}
    run = ansible_run.run_module(inventory, "data_check", {"volumes": recorded}, tmp_path)
    result = run.result()
    assert result["ok"] is True and not result.get("failed"), run.describe()

    docker_client.containers.run("lastgood-bench/busybox:1", ["rm", "/data/d/b"], volumes={volume: {"bind": "/data", "mode": "rw"}},
                                 network_mode="none", remove=True)
    run = ansible_run.run_module(inventory, "data_check", {"volumes": recorded}, tmp_path)
    result = run.result()
    assert result["failed"] is True
    assert result["volumes"][volume]["missing_paths"] == ["d/b"]
    assert result["msg"] == "volume %s: 1 recorded files missing (d/b)" % volume

    run = ansible_run.run_module(inventory, "data_check", {"volumes": recorded, "fail_on_problem": False}, tmp_path)
    assert run.result()["ok"] is False and not run.result().get("failed")


def test_tables_and_row_bounds(stack, inventory, tmp_path):
    demo = stack()
    connect = demo.db_connect(dbname="app")
    with psycopg2.connect(**connect) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int)")
        cur.execute("INSERT INTO t SELECT generate_series(1, 50)")
    recorded = {"app": {"access": {"service": "db", "port": demo.ports["db"], "user": "postgres"},
                        "tables": {"public.t": 100, "public.gone": 1}}}
    args = {"project_dir": str(demo.dir), "databases": recorded, "min_row_ratio": 0.9}
    result = ansible_run.run_module(inventory, "data_check", args, tmp_path).result()
    assert result["failed"] is True
    report = result["databases"]["app"]
    assert report["missing_tables"] == ["public.gone"]
    assert report["out_of_bounds"] == {"public.t": {"rows": 50, "recorded": 100, "min": 90, "max": None}}

    args["row_bounds"] = {"public.t": {"min": 40, "max": 60}}
    recorded["app"]["tables"].pop("public.gone")
    result = ansible_run.run_module(inventory, "data_check", args, tmp_path).result()
    assert result["ok"] is True, result
