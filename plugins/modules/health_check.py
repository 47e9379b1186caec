#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: health_check
short_description: Poll HTTP, TCP, container, PostgreSQL and Prometheus health checks until healthy, or watch them
version_added: 0.1.0
description:
  - Runs a set of checks in rounds. Every round runs all checks in parallel, so a round takes as
    long as its slowest check, not the sum of all of them.
  - B(Waiting) (the default) - rounds repeat, O(interval_s) apart, until O(consecutive_successes)
    rounds in a row had every check ok (V(healthy)), or until O(retries) or O(deadline_s) are used
    up (V(unhealthy)).
  - B(Watching) (O(watch_s) set) - rounds repeat until O(watch_s) has elapsed; the result is
    unhealthy as soon as O(consecutive_failures) rounds in a row had a failing check, healthy if the
    window closes without that. A window that closes on a failed round goes on, O(interval_s) apart,
    until that streak reaches O(consecutive_failures) (unhealthy) or a round does not fail, so that a
    streak the window cuts short never passes. Use this to watch a deployment for a while after it
    became healthy.
  - Network errors never end the module with a traceback; they become the failing check's RV(checks[].error).
  - B(Inconclusive) - a V(prometheus) check whose query proves nothing (no series, NaN, Prometheus
    unreachable, the query refused) is neither ok nor failed. A round with such a check and no failed
    one ends a success streak but does not count as a failed round. When the gate ends unhealthy and
    the latest round that was not all ok was inconclusive (or a watch window closes on an inconclusive
    round), RV(verdict) is V(inconclusive) and RV(healthy) is V(false); O(on_inconclusive) decides
    whether the task fails. An inconclusive result is never reported healthy.
  - The module never changes anything. The check specifications are validated completely (URLs,
    regular expressions, required options, duplicate names) before the first probe; with
    O(validate_only=true) nothing is probed at all.
author:
  - lastgood.rollback developers (@lastgood)
options:
  checks:
    description:
      - The checks. Every round runs all of them.
      - Each option below applies to the check types it names; an option given for a check of
        another type is refused before anything is probed.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the check, unique among O(checks). Results, RV(history) and RV(msg) use it.
        type: str
        required: true
      type:
        description:
          - What to check.
          - V(http) passes when an HTTP(S) request to O(checks[].url) is answered with one of
            O(checks[].status) (and the body matches O(checks[].body_regex), and the answer came within
            O(checks[].max_latency_ms), where given).
          - V(tcp) passes when a TCP connection to O(checks[].host):O(checks[].port) is accepted.
          - V(container) passes when every container of O(checks[].services) of the compose project runs
            and, if the container has a Docker healthcheck, is C(healthy); with O(checks[].require=not_crashed),
            when none of them crashed.
          - V(postgres) passes when a connection to the PostgreSQL server succeeds and C(SELECT 1)
            returns 1.
          - V(prometheus) runs O(checks[].query) as an instant query against the Prometheus HTTP API
            (C(/api/v1/query)) and passes when every returned series satisfies
            C(value <comparison> threshold) (O(checks[].comparison), O(checks[].threshold)). One series
            that does not fails the check; the worst series is reported. It is inconclusive when the
            answer has no series, only NaN values, is not an instant vector or scalar, or when Prometheus
            is unreachable, times out or refuses the query (the API's error text is reported).
          - When omitted, V(prometheus) if O(checks[].query) is given, else V(http) if O(checks[].url)
            is given, else V(tcp) if O(checks[].port) is given.
        type: str
        choices: [http, tcp, container, postgres, prometheus]
      timeout_s:
        description:
          - Time limit in seconds for one probe of this check (one request, connection or Docker query).
          - A probe still running half a second after this limit is reported as timed out.
          - For V(postgres), libpq's own connection timeout is whole seconds and at least 2; the
            limit above still applies.
        type: float
        default: 2.0
      url:
        description:
          - V(http) and V(prometheus), required.
          - V(http) - the C(http://) or C(https://) URL to request.
          - V(prometheus) - the base URL of the Prometheus server, for example C(http://127.0.0.1:9090)
            (C(/api/v1/query) is appended; a path prefix such as C(/prometheus) is kept).
          - A malformed URL fails the module before anything is probed.
          - Redirects are not followed; add the 3xx code to O(checks[].status) to accept one.
          - Proxy settings from the environment (C(http_proxy), C(https_proxy)) are ignored; a health
            check always connects to the host itself.
        type: str
      status:
        description:
          - V(http) only. The HTTP status codes that count as healthy.
          - Defaults to V([200]).
        type: list
        elements: int
      body_regex:
        description:
          - V(http) only. A Python regular expression that must be found (C(re.search)) in the
            response body (the first MiB, decoded as UTF-8).
          - An invalid expression fails the module before anything is probed.
        type: str
      max_latency_ms:
        description:
          - V(http) only. An answer that took longer than this many milliseconds counts as failed.
          - The latency is the time from sending the request to the complete answer (headers, and
            the body when O(checks[].body_regex) is set).
        type: float
      method:
        description:
          - V(http) only. The HTTP method. Defaults to V(GET).
        type: str
      validate_certs:
        description:
          - V(http) and V(prometheus). Whether the server's TLS certificate is verified. Defaults to V(true).
        type: bool
      headers:
        description:
          - V(http) and V(prometheus). Extra request headers (for example C(Authorization) for a
            Prometheus behind a proxy). Their values are never logged nor returned.
        type: dict
      host:
        description:
          - V(tcp) and V(postgres). Host name or address to connect to. Defaults to V(127.0.0.1).
        type: str
      port:
        description:
          - V(tcp) (required) and V(postgres) (defaults to V(5432)). The TCP port.
        type: int
      project_dir:
        description:
          - V(container) only. The compose project directory; the project name is the one
            C(docker compose) uses there (C(COMPOSE_PROJECT_NAME), the C(name) key of the compose file,
            else the directory name), unless O(checks[].project_name) is given.
          - One of O(checks[].project_dir) and O(checks[].project_name) is required.
        type: path
      files:
        description:
          - V(container) only. Compose files, relative to O(checks[].project_dir); needs O(checks[].project_dir).
          - When omitted, the files C(docker compose) itself picks are used.
        type: list
        elements: str
      project_name:
        description:
          - V(container) only. The compose project name. Enough on its own, the containers are found
            by their compose labels.
        type: str
      services:
        description:
          - V(container) only. The services whose containers must run (and be healthy).
          - A listed service without any container fails the check (not with O(checks[].require=not_crashed)).
          - Defaults to every service of the project that has containers; a project without any
            container fails the check.
        type: list
        elements: str
      require:
        description:
          - V(container) only. What each container of O(checks[].services) must be. Defaults to V(ready).
          - V(ready) - running and, if it has a Docker healthcheck, C(healthy). A healthcheck still
            C(starting), or a container its restart policy brings back (C(restarting)), is a service not
            up yet (see O(startup_s)).
          - V(not_crashed) - not crashed. The check fails only for a container that exited with a non-zero
            code, is C(dead), or is C(restarting) after a non-zero exit code. A container still starting,
            unhealthy, or whose process ended with code 0 (a one-shot job that finished), and a service
            without containers, pass. A crash that nothing brings back counts at once, also within
            O(startup_s); a container its restart policy brings back (C(restarting)) may crash only until
            what it needs is up, so within O(startup_s) it is a service not up yet. Meant for a watch of the
            services a deploy just recreated, alongside the checks that say whether they answer right.
        type: str
        choices: [ready, not_crashed]
      user:
        description:
          - V(postgres) only. The database user. Defaults to V(postgres).
        type: str
      password:
        description:
          - V(postgres) only. The user's password.
          - When omitted, the environment variable E(PGPASSWORD) of the managed host is used, when set.
          - Never returned or logged.
        type: str
      database:
        description:
          - V(postgres) only. The database to connect to. Defaults to V(postgres).
        type: str
      query:
        description:
          - V(postgres), optional. A data check run instead of C(SELECT 1), for example
            C(SELECT count(*) > 0 FROM orders); the check passes when the first column of the first row is true
            (or non-zero). It runs with the check's timeout as C(statement_timeout).
          - V(prometheus), required. The PromQL expression, evaluated as an instant query at the
            time of the probe. Its range selectors are the check's window, for example
            C(rate(demo_http_requests_total[30s])).
          - It must return an instant vector or a scalar. A series that does not exist yet gives no data, so
            write C((sum(rate(errors_total[30s])) or vector(0))) for a counter that only appears with
            the first error.
          - Prometheus evaluates it with a timeout of O(checks[].timeout_s).
        type: str
      threshold:
        description:
          - V(prometheus) only, required. The number each series of the result is compared with.
        type: float
      comparison:
        description:
          - V(prometheus) only. The comparison C(value <comparison> threshold) that must hold for every
            series for the check to pass. Defaults to V(<=) (the threshold is an upper bound).
          - With V(<) and V(<=) the series with the largest value is the worst one, with V(>) and V(>=)
            the one with the smallest value.
        type: str
        choices: ['<', '<=', '>', '>=', '==', '!=']
  retries:
    description:
      - Waiting only. How many rounds may follow the first one; V(0) runs exactly one round.
      - Must allow O(consecutive_successes) rounds, so at least O(consecutive_successes) - 1.
    type: int
    default: 0
  interval_s:
    description:
      - Seconds to sleep between the end of a round and the start of the next.
      - The sleep is shortened so that no round starts after O(deadline_s) (waiting) or O(watch_s)
        (watching); the last round starts at that moment at the latest.
      - Waiting, after a round whose only failures were V(container) checks with containers still
        C(starting) (their Docker healthcheck has not passed yet, as after a recreation), the engine
        is asked every 50 ms and the next round starts as soon as none is starting any more, instead of
        after the whole interval. Rounds that count towards O(consecutive_successes) stay
        O(interval_s) apart.
    type: float
    default: 1.0
  deadline_s:
    description:
      - Waiting only. Overall time limit in seconds. No round starts after it; a round running at the
        deadline is finished, so the module takes at most O(deadline_s) plus the longest
        O(checks[].timeout_s) plus half a second.
    type: float
    default: 60.0
  consecutive_successes:
    description:
      - Waiting only. How many rounds in a row must have every check ok to be healthy.
    type: int
    default: 1
  consecutive_failures:
    description:
      - How many rounds in a row with a failing check make the result unhealthy at once.
      - Watching, defaults to V(1).
      - Waiting, there is no such limit unless this is set; then the wait is given up early.
    type: int
  watch_s:
    description:
      - When set, watch for this many seconds instead of waiting for health (see the description).
      - O(retries), O(deadline_s) and O(consecutive_successes) do not apply then; the window itself
        is the time limit, extended only to decide a failure streak it closes on (and by O(startup_s)).
    type: float
  startup_s:
    description:
      - Watching, how long the services may take to answer at all, as after a deploy recreated them. Until every
        check's service answers, a round whose only failures are services not answering yet (connection refused;
        behind a published port, a connection closed or reset without an answer; a container healthcheck still
        C(starting); a container its restart policy brings back, C(restarting)) counts for nothing, and the window
        starts again after it, so that O(watch_s) is watched of services that answer.
      - A service that answers wrong (an HTTP 500, too slow) counts at once; one that still does not answer after
        O(startup_s) counts from then on.
      - V(0) (the default) counts every round from the first. Ignored when waiting (without O(watch_s)).
    type: float
    default: 0
  fail_on_unhealthy:
    description:
      - Whether an unhealthy result fails the task.
      - With V(false) the module reports RV(healthy=false) and the task does not fail, so the playbook
        can decide (for example, roll back).
    type: bool
    default: true
  validate_only:
    description:
      - Only validate O(checks) and the polling options; probe nothing.
      - For a preflight before anything is changed. Through Ansible, the module's action plugin does this
        on the controller without contacting the managed host (the specifications are complete there);
        whether the Python libraries and compose project directories a check needs exist is then found
        when the checks run. Run as a bare module, it also checks those on the host.
    type: bool
    default: false
  on_inconclusive:
    description:
      - What an V(inconclusive) result (see the description) does to the task.
      - V(fail) fails the task, whatever O(fail_on_unhealthy) says - nobody knows whether the release
        is good, so a deploy must stop (abort) rather than promote it or roll it back.
      - V(report) lets the task succeed with RV(healthy=false) and RV(verdict=inconclusive), so the
        playbook decides (for example, pause and ask).
    type: str
    choices: [fail, report]
    default: fail
extends_documentation_fragment:
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
  - lastgood.rollback.attributes.INFO_MODULE
attributes:
  action:
    description: Has an action plugin that validates the checks on the controller before the module runs.
    support: full
requirements:
  - For V(container) checks, the Docker SDK for Python (C(docker)) and, with O(checks[].project_dir)
    but without O(checks[].project_name), the C(docker compose) v2 CLI plugin on the managed host.
  - For V(postgres) checks, C(psycopg2) (or C(psycopg2-binary)) on the managed host.
notes:
  - All checks of a round run in parallel threads on the managed host.
  - A V(prometheus) check only sees what Prometheus scraped. A service that stops answering makes its
    rate series go stale (no data, inconclusive), so pair an error-rate query with an V(http) check or
    with C(min(up{job="app"})) and O(checks[].comparison) V(==), O(checks[].threshold=1).
  - A failure shows within the query's range window plus one scrape interval; O(consecutive_failures)
    adds O(interval_s) per extra round.
seealso:
  - module: ansible.builtin.uri
  - module: ansible.builtin.wait_for
"""

EXAMPLES = r"""
- name: Wait up to 60 s until the app, its database and its containers are healthy three rounds in a row
  lastgood.rollback.health_check:
    checks:
      - name: app-health
        url: http://127.0.0.1:8080/health
        body_regex: '"status":\s*"ok"'
        max_latency_ms: 500
      - name: db
        type: postgres
        port: 5432
        password: "{{ vault_postgres_password }}"
      - name: containers
        type: container
        project_dir: /srv/shop
        services: [app, db]
    retries: 60
    interval_s: 1
    deadline_s: 60
    consecutive_successes: 3

- name: Watch the new release for two minutes (it may take 30 s to listen), report instead of failing
  lastgood.rollback.health_check:
    checks:
      - name: app-health
        url: http://127.0.0.1:8080/health
      - name: static
        host: 127.0.0.1
        port: 8081
      # The recreated app crashing as it starts fails the watch at once, not after startup_s.
      - name: new-containers
        type: container
        project_name: shop
        services: [app]
        require: not_crashed
    watch_s: 120
    startup_s: 30
    interval_s: 2
    consecutive_failures: 3
    fail_on_unhealthy: false
  register: watch

- name: Roll back when the watch saw the release fail
  ansible.builtin.debug:
    msg: "rolling back: {{ watch.msg }}"
  when: not watch.healthy

- name: Watch the error rate and p95 latency in Prometheus for five minutes after a deploy
  lastgood.rollback.health_check:
    checks:
      - name: error-rate
        type: prometheus
        url: http://127.0.0.1:9090
        query: >-
          (sum(rate(demo_http_requests_total{status=~"5.."}[30s])) or vector(0))
          / sum(rate(demo_http_requests_total[30s]))
        threshold: 0.05
        comparison: '<'
      - name: p95-latency
        type: prometheus
        url: http://127.0.0.1:9090
        query: histogram_quantile(0.95, sum by (le) (rate(demo_http_request_duration_seconds_bucket[30s])))
        threshold: 0.5
    watch_s: 300
    interval_s: 5
    consecutive_failures: 2
    fail_on_unhealthy: false
    on_inconclusive: report
  register: canary

- name: Stop the deploy when Prometheus could not tell
  ansible.builtin.fail:
    msg: "deploy paused, no verdict: {{ canary.msg }}"
  when: canary.verdict == 'inconclusive'

- name: Preflight, before any change - the checks are well-formed, nothing is probed
  lastgood.rollback.health_check:
    checks: "{{ shop_health_checks }}"
    validate_only: true
"""

RETURN = r"""
healthy:
  description:
    - Whether the checks were found healthy by the rules of waiting or watching.
    - V(false) for an inconclusive result too; RV(verdict) tells the two apart.
    - V(null) with O(validate_only=true).
  returned: always
  type: bool
  sample: true
verdict:
  description:
    - V(healthy), V(failed) (a check failed; roll back) or V(inconclusive) (no check failed for certain,
      but a V(prometheus) check had no answer that proves health; neither promote nor roll back).
    - V(null) with O(validate_only=true).
  returned: always
  type: str
  sample: failed
inconclusive:
  description: Whether RV(verdict) is V(inconclusive). V(null) with O(validate_only=true).
  returned: always
  type: bool
  sample: false
checks:
  description:
    - The result of each check in the LAST round, in the order of O(checks).
    - With O(validate_only=true), each check's name and type, the rest V(null).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The name of the check.
      type: str
      sample: app-health
    type:
      description: The type of the check.
      type: str
      sample: http
    ok:
      description: Whether the check passed.
      type: bool
      sample: false
    latency_ms:
      description: How long the probe took, in milliseconds, one decimal.
      type: float
      sample: 12.4
    error:
      description: Why the check failed, one line; V(null) when it passed.
      type: str
      sample: HTTP 500 (expected 200)
    status:
      description: The HTTP status code of the answer (V(http) checks); V(null) otherwise or without an answer.
      type: int
      sample: 500
    inconclusive:
      description: V(prometheus) checks only. Whether the probe proved nothing (no data, Prometheus unreachable, query refused).
      type: bool
      returned: for prometheus checks
      sample: false
    value:
      description:
        - V(prometheus) checks only. The value of the worst series; V(null) when there was none
          (inconclusive) or it was infinite (see RV(checks[].reason)).
      type: float
      returned: for prometheus checks
      sample: 0.213
    labels:
      description: V(prometheus) checks only. The labels of the worst series.
      type: dict
      returned: for prometheus checks
      sample: {}
    series:
      description: V(prometheus) checks only. How many series the query returned.
      type: int
      returned: for prometheus checks
      sample: 1
    reason:
      description: V(prometheus) checks only. One line saying why the check passed, failed or was inconclusive.
      type: str
      returned: for prometheus checks
      sample: value = 0.213, not < 0.05
    containers:
      description: V(container) checks only. The containers looked at.
      type: list
      elements: dict
      returned: for container checks
      sample:
        - service: app
          name: shop-app-1
          state: running
          health: healthy
rounds:
  description: How many rounds ran.
  returned: always
  type: int
  sample: 3
consecutive_successes:
  description: How many rounds in a row, up to the last one, had every check ok.
  returned: always
  type: int
  sample: 3
consecutive_failures:
  description:
    - How many rounds in a row, up to the last one, had a failed check (inconclusive rounds in between
      neither count nor break the streak).
  returned: always
  type: int
  sample: 0
consecutive_inconclusive:
  description: How many rounds in a row, up to the last one, were inconclusive (no failed check, an inconclusive one).
  returned: always
  type: int
  sample: 0
elapsed_s:
  description: Seconds from the start of the first round to the end of the last.
  returned: always
  type: float
  sample: 2.417
first_ok_after_s:
  description: Seconds from the start until the end of the first round in which every check was ok; V(null) if there was none.
  returned: always
  type: float
  sample: 0.012
starting_rounds:
  description: Watching with O(startup_s), the rounds that did not count because the services did not answer yet.
  returned: always
  type: int
  sample: 4
up_after_s:
  description:
    - Watching with O(startup_s), seconds from the start until the end of the first round in which every service
      answered (rightly or wrongly); V(null) otherwise, or when they never did within O(startup_s).
  returned: always
  type: float
  sample: 2.1
failing_since:
  description:
    - Unix time at which the round that began the current run of failed rounds started; null when the last round
      passed or none failed. A deploy's watch uses it to show how fast a failure turned into a rollback.
  returned: always
  type: float
history:
  description:
    - For each round (the last 50 rounds at most, oldest first), the names of the checks that were not ok
      in it (failed or inconclusive).
  returned: always
  type: list
  elements: list
  sample: [["app-health", "db"], ["app-health"], [], [], []]
msg:
  description: One-line summary.
  returned: always
  type: str
  sample: "unhealthy: app-health: HTTP 500 (expected 200) (6 rounds in 5.1 s, retries exhausted)"
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.lastgood.rollback.plugins.module_utils import _health
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import (
    ComposeError,
    ComposeProject,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import require_docker_sdk


def prepare_container_checks(module, checks, resolve_names):
    """Check the project directories and resolve each container check's project name once."""
    for check in checks:
        if check.type != "container":
            continue
        if not check.project_dir:
            continue
        project = ComposeProject(module, check.project_dir, check.files, check.project_name)
        try:
            project.check_paths()
            if resolve_names and not check.project_name:
                check.project = project.name
        except ComposeError as exc:
            module.fail_json(msg="check %r: %s" % (check.name, exc.msg), **exc.result)


def main():
    module = AnsibleModule(argument_spec=_health.module_argument_spec(), supports_check_mode=True)
    # The PGPASSWORD fallback is read by _health, not by the argument spec (it would then attach
    # to every check); it is hidden like a password option all the same.
    if os.environ.get("PGPASSWORD"):
        module.no_log_values.add(os.environ["PGPASSWORD"])

    try:
        checks = _health.parse_checks(module.params["checks"])
        settings = _health.PollSettings.from_params(module.params)
    except _health.HealthSpecError as exc:
        module.fail_json(msg=str(exc))

    types = set(check.type for check in checks)
    if "postgres" in types and not _health.HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2 (or psycopg2-binary)"),
                         exception=_health.PSYCOPG2_IMPORT_ERROR)
    if "container" in types:
        require_docker_sdk(module)
    prepare_container_checks(module, checks, resolve_names=not module.params["validate_only"])

    if module.params["validate_only"]:
        module.exit_json(changed=False, **_health.validation_result(checks))

    outcome = _health.poll(lambda: _health.run_round(checks), settings,
                           pause=lambda seconds, results: _health.pause(checks, seconds, results))
    result = _health.result_dict(outcome, settings)
    if outcome.verdict == "inconclusive":
        fail = module.params["on_inconclusive"] == "fail"
    else:
        fail = not outcome.healthy and module.params["fail_on_unhealthy"]
    if fail:
        module.fail_json(changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
