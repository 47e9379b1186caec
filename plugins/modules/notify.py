#!/usr/bin/python
# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: notify
short_description: Tell people about a rollback or deploy through a webhook (generic JSON or Slack-compatible)
version_added: 0.2.0
description:
  - Posts one message to each webhook whose minimum level the message reaches. A generic webhook gets a JSON
    document with C(event), C(level), C(title), C(text), C(fields) and C(at); a Slack-compatible webhook (Slack,
    Mattermost, Rocket.Chat incoming webhooks) gets C(text) and C(blocks).
  - A failed delivery is a warning, not a failure, unless O(fail_on_error=true); telling people must never stop
    a recovery.
  - Webhook URLs and headers are treated as secrets and never returned.
author:
  - lastgood.rollback developers (@lastgood)
extends_documentation_fragment:
  - lastgood.rollback.attributes
  - lastgood.rollback.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details:
      - Reports which webhooks would get the message; sends nothing.
  diff_mode:
    support: none
options:
  webhooks:
    description: Where to send.
    type: list
    elements: dict
    required: true
    suboptions:
      url:
        description: The webhook URL (a secret, as it often holds the token).
        type: str
        required: true
      format:
        description: The payload shape.
        type: str
        choices: [generic, slack]
        default: generic
      min_level:
        description: Send only messages of this level or higher.
        type: str
        choices: [info, warning, critical]
        default: info
      headers:
        description: Extra HTTP headers (for example an C(Authorization) header).
        type: dict
        default: {}
      name:
        description: A name for the results (the URL is never shown).
        type: str
  level:
    description: How urgent the message is.
    type: str
    choices: [info, warning, critical]
    default: info
  event:
    description: What happened, as a short machine-readable word (for example C(rollback_succeeded)).
    type: str
    required: true
  title:
    description: One line for humans.
    type: str
    required: true
  text:
    description: Details for humans.
    type: str
    default: ""
  fields:
    description: Key/value details (project, tier, snapshot, duration, ...).
    type: dict
    default: {}
  timeout_s:
    description: Seconds each delivery may take.
    type: float
    default: 5
  fail_on_error:
    description: Fail when a delivery fails (by default a warning).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Tell the on-call channel
  lastgood.rollback.notify:
    webhooks:
      - url: "{{ slack_webhook_url }}"
        format: slack
        min_level: warning
      - url: https://alerts.example.internal/hooks/lastgood
        headers:
          Authorization: "Bearer {{ hook_token }}"
    level: critical
    event: rollback_failed
    title: "Rollback of shop FAILED on {{ inventory_hostname }}"
    fields:
      tier: full
      snapshot: 20261130T084512Z
"""

RETURN = r"""
deliveries:
  description: Per webhook (by O(webhooks[].name) or position) whether it was sent, skipped (level) or failed.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "webhook-1", "sent": true, "status": 200}]
sent:
  description: How many webhooks got the message.
  returned: always
  type: int
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import isoformat, utc_now

LEVELS = ("info", "warning", "critical")
SLACK_MARK = {"info": ":large_green_circle:", "warning": ":warning:", "critical": ":red_circle:"}


def payload(params, fmt):
    if fmt == "slack":
        lines = ["%s *%s*" % (SLACK_MARK[params["level"]], params["title"])]
        if params["text"]:
            lines.append(params["text"])
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]
        if params["fields"]:
            blocks.append({"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*%s*\n%s" % (key, value)} for key, value in sorted(params["fields"].items())][:10]})
        return {"text": "\n".join(lines), "blocks": blocks}
    return {"event": params["event"], "level": params["level"], "title": params["title"], "text": params["text"],
            "fields": params["fields"], "at": isoformat(utc_now())}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            webhooks=dict(type="list", elements="dict", required=True, no_log=False, options=dict(
                url=dict(type="str", required=True, no_log=True),
                format=dict(type="str", default="generic", choices=["generic", "slack"]),
                min_level=dict(type="str", default="info", choices=list(LEVELS)),
                headers=dict(type="dict", default={}, no_log=True),
                name=dict(type="str"),
            )),
            level=dict(type="str", default="info", choices=list(LEVELS)),
            event=dict(type="str", required=True),
            title=dict(type="str", required=True),
            text=dict(type="str", default=""),
            fields=dict(type="dict", default={}),
            timeout_s=dict(type="float", default=5),
            fail_on_error=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    deliveries, failures = [], []
    for position, hook in enumerate(params["webhooks"], start=1):
        name = hook["name"] or "webhook-%d" % position
        if LEVELS.index(params["level"]) < LEVELS.index(hook["min_level"]):
            deliveries.append({"name": name, "sent": False, "skipped": "level %s is below %s" % (params["level"], hook["min_level"])})
            continue
        if module.check_mode:
            deliveries.append({"name": name, "sent": False, "would_send": True})
            continue
        headers = {"Content-Type": "application/json"}
        headers.update(hook["headers"])
        try:
            response = open_url(hook["url"], data=json.dumps(payload(params, hook["format"])).encode("utf-8"),
                                headers=headers, method="POST", timeout=params["timeout_s"], validate_certs=True)
            deliveries.append({"name": name, "sent": True, "status": response.getcode()})
        except Exception as exc:  # pylint: disable=broad-except  # any delivery error is reported, not raised
            # The message of an HTTP error can repeat the URL; say only what kind of error it was.
            why = getattr(exc, "code", None) or type(exc).__name__
            deliveries.append({"name": name, "sent": False, "error": "delivery failed: %s" % why})
            failures.append("%s: delivery failed (%s)" % (name, why))
    result = dict(changed=False, deliveries=deliveries, sent=sum(1 for d in deliveries if d["sent"]))
    if failures and params["fail_on_error"]:
        module.fail_json(msg="; ".join(failures), **result)
    for failure in failures:
        module.warn(failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
