"""The playbooks also run by their collection name, lastgood.rollback.<name>."""

from __future__ import annotations

import ansible_run


def test_playbooks_run_by_collection_name(stack, docker_client, tmp_path):
    with ansible_run.stack_host(stack(), tmp_path, docker_client) as host:
        run_all(host)


def run_all(host):
    inventory = host.inventory
    run = ansible_run.run_ansible_playbook("lastgood.rollback.snapshot", inventory)
    assert run.rc == 0, run.describe()
    snapshot_id = run.outcome()["snapshot_id"]
    assert ansible_run.last_known_good(host.backup_root, host.stack.project) == snapshot_id
    run = ansible_run.run_ansible_playbook("lastgood.rollback.verify", inventory)
    assert run.rc == 0, run.describe()
    assert run.outcome()["tier"] == "verify" and run.outcome()["snapshot_id"] == snapshot_id
    run = ansible_run.run_ansible_playbook("lastgood.rollback.rollback_images", inventory, check=True)
    assert run.rc == 0, run.describe()
    assert run.outcome()["result"] == "planned"
