# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tier 2: put recorded image IDs back under the services' references, then recreate what changed.

Shared by compose_image_restore (the tier on its own) and rollback_run (which applies an
image-only first attempt in the same module run that took the lock). Everything is verified
before the first tag moves; a problem raises StepError with one line naming every problem.
"""

from __future__ import annotations

from ansible_collections.lastgood.rollback.plugins.module_utils import _services
from ansible_collections.lastgood.rollback.plugins.module_utils._compose import ComposeError
from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    ROLLED_BACK_TAG_PREFIX,
    APIError,
    image_id,
    normalize_reference,
    one_line,
    split_reference,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import compact_timestamp, utc_now
from ansible_collections.lastgood.rollback.plugins.module_utils._state import live_services


class ImageRestore:
    """Plans, then applies, the tag moves for a set of recorded services."""

    def __init__(self, client, project, recorded, tag_replaced=True, check_mode=False):
        self.client = client
        self.project = project
        self.recorded = recorded
        self.tag_replaced = tag_replaced
        self.check_mode = check_mode
        self.stamp = compact_timestamp(utc_now())
        self.plan = {}
        self.actions = []

    def verify(self):
        """Every problem, for every service, before anything changes; returns the live services."""
        live = live_services(self.project, self.client)
        problems = []
        for name in sorted(self.recorded):
            entry = self.recorded[name] or {}
            wanted_ref = normalize_reference(entry.get("image") or "")
            wanted_id = entry.get("image_id")
            if name not in live:
                problems.append("service %s is in the record but not in the project" % name)
                continue
            if not entry.get("image") or not wanted_id:
                problems.append("service %s: the record has no image or image_id" % name)
                continue
            if live[name]["image"] != wanted_ref:
                problems.append("service %s: configured image changed from %s to %s since the record"
                                " (restore the configuration first)" % (name, wanted_ref, live[name]["image"]))
                continue
            if image_id(self.client, wanted_id) is None:
                problems.append("service %s: image %s is no longer present locally" % (name, wanted_id))
                continue
            self.plan[name] = self._service_plan(live[name], wanted_ref, wanted_id, entry.get("running", True))
        if problems:
            raise StepError("nothing changed: " + "; ".join(problems), problems=problems)
        return live

    def _service_plan(self, live, reference, wanted_id, was_running):
        before = live["configured_image_id"]
        running = live["container_image_ids"]
        retag = before != wanted_id
        keep_tag = None
        if retag and before and self.tag_replaced:
            keep_tag = self._free_rolled_back_tag(reference, before)
        return {
            "image": reference,
            "before_image_id": before,
            "after_image_id": wanted_id,
            "retagged": retag,
            "rolled_back_tag": keep_tag,
            "container_image_ids": running,
            # Stopped on its own (a one-shot job that ran, a service stopped on purpose) and not running
            # in the record either: nothing to bring back, and a second run must not recreate it again.
            "needs_recreate": running != [wanted_id] or (not live["running"] and bool(was_running)),
        }

    def _free_rolled_back_tag(self, reference, image):
        repository = split_reference(reference)[0]
        candidate, counter = "%s:%s%s" % (repository, ROLLED_BACK_TAG_PREFIX, self.stamp), 1
        while image_id(self.client, candidate) not in (None, image):
            counter += 1
            candidate = "%s:%s%s-%d" % (repository, ROLLED_BACK_TAG_PREFIX, self.stamp, counter)
        return candidate

    def apply(self, recreate=False):
        for name in sorted(self.plan):
            step = self.plan[name]
            if step["rolled_back_tag"]:
                self.actions.append("tag %s (%s) as %s" % (step["image"], short(step["before_image_id"]),
                                                           step["rolled_back_tag"]))
            if step["retagged"]:
                self.actions.append("tag %s as %s" % (short(step["after_image_id"]), step["image"]))
            if recreate and step["needs_recreate"]:
                self.actions.append("recreate %s (runs %s)" % (
                    name, ", ".join(short(i) for i in step["container_image_ids"]) or "no container"))
            if self.check_mode:
                continue
            try:
                if step["rolled_back_tag"]:
                    self._tag(step["before_image_id"], step["rolled_back_tag"])
                if step["retagged"]:
                    self._tag(step["after_image_id"], step["image"])
            except APIError as exc:
                raise StepError("tagging for service %s failed: %s" % (name, one_line(exc)),
                                services=self.plan, actions=self.actions) from exc

    def _tag(self, image, reference):
        repository, tag = split_reference(reference)
        self.client.api.tag(image, repository, tag, force=True)


def short(image):
    return (image or "none").replace("sha256:", "")[:12]


def restore_images(client, project, recorded, all_recorded=None, tag_replaced=True, recreate=False, wait=True,
                   wait_timeout=120, stop_timeout=None, check_mode=False):
    """Verify, retag and (with `recreate`) recreate the services whose containers run another
    image; the compose_image_restore result. Raises StepError (nothing changed when it comes
    from the verification) with the details gathered so far in its result."""
    restore = ImageRestore(client, project, recorded, tag_replaced=tag_replaced, check_mode=check_mode)
    live = restore.verify()
    restore.apply(recreate)
    plan = restore.plan
    recreate_names = sorted(name for name, step in plan.items() if step["needs_recreate"])
    result = dict(
        changed=any(step["retagged"] for step in plan.values()) or bool(recreate and recreate_names),
        project_name=project.name,
        services=plan,
        recreate=recreate_names,
        unchanged=sorted(name for name, step in plan.items()
                         if not step["retagged"] and not step["needs_recreate"]),
        not_in_snapshot=sorted(set(live) - set(all_recorded if all_recorded is not None else recorded)),
        actions=restore.actions,
        diff=dict(
            before="".join("%s: %s\n" % (n, s["before_image_id"]) for n, s in sorted(plan.items())),
            after="".join("%s: %s\n" % (n, s["after_image_id"]) for n, s in sorted(plan.items())),
        ),
    )
    if recreate and recreate_names and not check_mode:
        try:
            up = _services.bring_up(project, client, recreate_names, wait=wait, wait_timeout=wait_timeout,
                                    recreate="always", stop_timeout=stop_timeout)
        except ComposeError as exc:
            raise StepError(exc.msg, **dict(exc.result, **result)) from exc
        result.update(changed=True, recreated=up["services"], ready=up.get("ready"), wait_s=up["wait_s"],
                      cmd=up["cmd"], stdout=up["stdout"], stderr=up["stderr"])
        if up.get("ready") is False:
            raise StepError("images restored, but " + _services.not_ready_msg(up), **result)
    return result
