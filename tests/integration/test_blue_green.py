# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blue-green switching (playbooks/switch_color.yml, role blue_green, module nginx_upstream)
against a real nginx in front of two real copies of the demo app (demo/bluegreen).

Every test starts and ends with blue live on the shared stack (the gate-failure test has a
stack of its own, whose green is broken).
"""

from __future__ import annotations

import time

import pytest

try:
    from . import ansible_run, bluegreen_support, stacks
except ImportError:
    import ansible_run
    import bluegreen_support
    import stacks

Prober = bluegreen_support.load_prober()
# A request is failed when it errors or gets no answer within 2 s. The prober's default of 0.5 s
# counts an answer slowed by a busy machine (2 shared cores) as a failure, which is not what
# a switch does to traffic.
PROBE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def bg_factory(demo_images, docker_client, tmp_path_factory):
    parent = tmp_path_factory.mktemp("bluegreen")
    created = []

    def factory(**kwargs):
        stack = bluegreen_support.BlueGreenStack.create(parent, docker_client, **kwargs)
        created.append(stack)
        return stack

    yield factory
    errors = []
    for stack in reversed(created):
        try:
            stack.destroy()
        except Exception as err:  # noqa: BLE001 - tear down the others all the same
            errors.append("%s: %s" % (stack.project, err))
    if errors:
        pytest.fail("teardown failed: " + "; ".join(errors))


@pytest.fixture(scope="module")
def bg(bg_factory):
    return bg_factory()


@pytest.fixture
def blue_live(bg):
    """The shared stack with blue live, before and (asserted) after the test."""
    assert bg.version() == "blue"
    yield bg
    assert bg.version() == "blue", "the test must leave blue live"


def inventory(stack, directory, **extra):
    return ansible_run.write_inventory(directory, stack.host_vars(**extra))


def switch(inv, target=None, check=False):
    extra = {"blue_green_target_color": target} if target else None
    return ansible_run.run_playbook("switch_color", inv, extra_vars=extra, check=check)


def test_switch_under_load_reloads_without_restart_and_loses_no_request(blue_live, tmp_path):
    stack = blue_live
    inv = inventory(stack, tmp_path)
    nginx_before = stack.nginx_state()
    workers_before = stack.nginx_workers()
    with Prober(stack.url("/version"), rate_hz=20, timeout_s=PROBE_TIMEOUT_S) as prober:
        to_green = switch(inv, "green")
        assert to_green.rc == 0, to_green.describe()
        # Right after the playbook returns, every new request reaches green.
        assert stack.version() == "green"
        marker = stack.marker()
        workers_green = stack.nginx_workers()
        again = switch(inv, "green")
        back = switch(inv)  # no color: the switch back to the other one
        assert back.rc == 0, back.describe()
        assert stack.version() == "blue"
    probes, failed = prober.counts()

    assert failed == 0, "%d of %d probes through nginx failed during the switches" % (failed, probes)
    assert probes >= 20 * 3, probes  # three playbooks of at least a second each, at 20 Hz

    outcome = to_green.outcome()
    assert (outcome["tier"], outcome["result"], outcome["from_color"], outcome["to_color"], outcome["reloaded"]) == (
        "blue_green", "success", "blue", "green", True)
    assert outcome["healthy"] is True and outcome["project"] == stack.project
    assert marker["color"] == "green" and marker["servers"] == [stack.colors()["green"]]
    # Reloaded, not restarted: same container, same start, new workers.
    assert stack.nginx_state() == nginx_before
    assert workers_green != workers_before

    # The second run at the same color changes nothing and does not reload.
    assert again.rc == 0, again.describe()
    assert again.recap["changed"] == 0, again.describe()
    assert again.outcome()["reloaded"] is False

    assert back.outcome()["from_color"] == "green" and back.outcome()["to_color"] == "blue"
    assert stack.marker()["color"] == "blue"
    assert stack.upstream_bytes() == bluegreen_support.upstream_text("blue", stack.ports["blue"]).encode()


def test_check_mode_plans_and_changes_nothing(blue_live, tmp_path):
    stack = blue_live
    inv = inventory(stack, tmp_path)
    before = (stack.upstream_bytes(), stack.marker(), stack.nginx_workers(), stack.nginx_state())
    run = switch(inv, "green", check=True)
    assert run.rc == 0, run.describe()
    plan = run.result("Switch nginx to the target color (validate, reload, record)")
    assert plan["changed"] is True and plan["reloaded"] is False
    assert (plan["from_color"], plan["to_color"]) == ("blue", "green")
    assert plan["actions"][0] == "switch upstream from blue to green in %s" % bluegreen_support.UPSTREAM_FILE
    assert str(stack.ports["green"]) in plan["diff"]["after"] and str(stack.ports["blue"]) in plan["diff"]["before"]
    assert run.outcome()["result"] == "planned"
    assert (stack.upstream_bytes(), stack.marker(), stack.nginx_workers(), stack.nginx_state()) == before
    assert stack.version() == "blue"


def test_config_refused_by_nginx_keeps_the_live_color(blue_live, tmp_path):
    stack = blue_live
    # A port nginx refuses ("invalid port in upstream"): only `nginx -t` can tell.
    colors = dict(stack.colors(), green="127.0.0.1:99999")
    inv = inventory(stack, tmp_path, blue_green_colors=colors)
    before = (stack.upstream_bytes(), stack.marker(), stack.nginx_workers(), stack.nginx_state())
    with Prober(stack.url("/version"), rate_hz=20, timeout_s=PROBE_TIMEOUT_S) as prober:
        run = switch(inv, "green")
    assert run.rc != 0
    msg = run.failure_msg()
    assert "nginx -t refused the new upstream for green" in msg and "traffic stays on blue" in msg, msg
    assert 'invalid port in upstream "127.0.0.1:99999"' in msg, msg
    assert "\n" not in msg
    # Nothing reloaded (same workers), the file byte for byte as before, the marker untouched.
    assert (stack.upstream_bytes(), stack.marker(), stack.nginx_workers(), stack.nginx_state()) == before
    assert prober.counts()[1] == 0
    assert run.outcome()["result"] == "failed" and run.outcome()["live_color"] == "blue"
    assert stack.version() == "blue"
    leftovers = [p.name for p in (stack.dir / "upstream").iterdir() if p.name != "upstream.conf"]
    assert leftovers == []


@pytest.mark.parametrize("extra, expected", [
    ({"blue_green_target_color": "purple"}, "blue_green_target_color empty or one of them"),
    ({"blue_green_colors": {"blue": "127.0.0.1:1", "green": "127.0.0.1:2; include /etc/passwd"}},
     "is not a plain address with optional parameters"),
    ({"blue_green_gate_checks": {}, "blue_green_color_services": {}}, "could not be gated"),
])
def test_bad_input_is_refused_before_any_change(blue_live, tmp_path, extra, expected):
    stack = blue_live
    target = extra.pop("blue_green_target_color", "green")
    inv = inventory(stack, tmp_path, **extra)
    before = (stack.upstream_bytes(), stack.marker(), stack.nginx_workers())
    run = ansible_run.run_playbook("switch_color", inv, extra_vars={"blue_green_target_color": target})
    assert run.rc != 0
    assert expected in run.failure_msg(), run.failure_msg()
    assert (stack.upstream_bytes(), stack.marker(), stack.nginx_workers()) == before


def test_module_cycle_check_equals_run_and_second_run_changes_nothing(blue_live, tmp_path):
    stack = blue_live
    inv = ansible_run.write_inventory(tmp_path, {})
    args = {"project_dir": str(stack.dir), "upstream_file": bluegreen_support.UPSTREAM_FILE,
            "colors": stack.colors(), "color": "green"}
    try:
        cycle = ansible_run.run_cycle(inv, "nginx_upstream", args, tmp_path)
        check, real, check2, real2 = (cycle.results[k] for k in ("check", "run", "check again", "run again"))
        assert check["changed"] is real["changed"] is True
        assert check["diff"] == real["diff"]
        assert [a.split(" ")[0] for a in check["actions"]] == ["switch", "validate", "reload", "record"]
        assert real["reloaded"] is True and real["reload_wait_s"] < 5
        assert check2["changed"] is real2["changed"] is False
        assert real2["actions"] == [] and real2["reloaded"] is False
        assert stack.version() == "green"
    finally:
        back = ansible_run.run_module(inv, "nginx_upstream", dict(args, color="blue"), tmp_path)
        assert back.rc == 0, back.describe()


def test_gate_failure_on_the_target_means_no_switch(bg_factory, tmp_path):
    stack = bg_factory(green_broken=True)
    inv = inventory(stack, tmp_path, blue_green_gate_deadline_s=2)
    before = (stack.upstream_bytes(), stack.marker(), stack.nginx_workers(), stack.nginx_state())
    started = time.monotonic()
    run = switch(inv, "green")
    assert run.rc != 0
    msg = run.failure_msg()
    assert "color green is not healthy, no switch (traffic stays on blue)" in msg, msg
    assert time.monotonic() - started < 30
    assert (stack.upstream_bytes(), stack.marker(), stack.nginx_workers(), stack.nginx_state()) == before
    assert stack.version() == "blue"
    assert run.outcome()["healthy"] is False and run.outcome()["result"] == "failed"
    # The switch itself never ran (only the plan, in check mode).
    assert run.results_of("Switch nginx to the target color (validate, reload, record)") == []
    status, _body = stacks.http_get(stack.url("/health", "green"))
    assert status == 500
