# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live state of a compose project: configured images and what containers really run."""

from __future__ import annotations

import os

from ansible_collections.lastgood.rollback.plugins.module_utils._docker import (
    image_id,
    normalize_reference,
    project_containers,
)
from ansible_collections.lastgood.rollback.plugins.module_utils._git import git_state, parse_status_z
from ansible_collections.lastgood.rollback.plugins.module_utils._manifest import sha256_file


def live_services(project, client):
    """Per service: configured reference, the ID it resolves to, and the running containers.

    `image_id` is what the service's containers actually run (the first container's image
    when they agree); when no container exists it falls back to what the reference
    resolves to, and `running` says so.
    """
    containers = project_containers(client, project.name)
    services = {}
    for name in sorted(project.services):
        reference = normalize_reference(project.service_image(name))
        configured_id = image_id(client, reference)
        mine = containers.get(name, [])
        running_ids = sorted({c["image_id"] for c in mine})
        services[name] = {
            "image": reference,
            "image_id": mine[0]["image_id"] if mine else configured_id,
            "configured_image_id": configured_id,
            "running": any(c["state"] == "running" for c in mine),
            "container_image_ids": running_ids,
            "containers": [
                {"id": c["id"], "name": c["name"], "image_id": c["image_id"],
                 "state": c["state"], "health": c["health"]}
                for c in mine
            ],
            "build": "build" in project.services[name],
        }
    return services


def dirty_paths(module, directory, exclude=()):
    """Paths (relative to `directory`) with uncommitted or untracked changes, minus `exclude`."""
    git = module.get_bin_path("git")
    if git is None:
        return []
    rc, out, _err = module.run_command([git, "-C", directory, "status", "--porcelain", "-z",
                                        "--untracked-files=normal", "--", "."])
    if rc != 0:
        return []
    prefix_rc, prefix, _err = module.run_command([git, "-C", directory, "rev-parse", "--show-prefix"])
    prefix = prefix.strip() if prefix_rc == 0 else ""
    paths = []
    for _code, path, _source in parse_status_z(out):
        if prefix and path.startswith(prefix):
            path = path[len(prefix):]
        if path not in exclude:
            paths.append(path)
    return sorted(paths)


def compare_with_manifest(module, project, client, manifest):
    """What differs between the live project and a snapshot, per rollback tier.

    images: services whose containers run something other than the recorded image ID
    (or that no longer exist); files: recorded configuration files changed or missing;
    git: recorded and live commit when they differ.
    """
    live = live_services(project, client)
    recorded = manifest.get("services") or {}
    images = sorted(
        name for name, entry in recorded.items()
        if name not in live or live[name]["container_image_ids"] != [entry.get("image_id")]
    )
    added = sorted(set(live) - set(recorded))
    removed = sorted(set(recorded) - set(live))
    files = []
    for rel, meta in sorted((manifest.get("files") or {}).items()):
        path = os.path.join(project.project_dir, rel)
        try:
            if sha256_file(path) != meta.get("sha256"):
                files.append(rel)
        except OSError:
            files.append(rel)
    git = None
    recorded_git = manifest.get("git")
    now = (git_state(module, project.project_dir) or {}) if recorded_git else {}
    if recorded_git:
        # Uncommitted changes to recorded configuration files are the config tier's business;
        # only other changes (or another commit) need the code tier.
        dirty = dirty_paths(module, project.project_dir, exclude=set(files) | set(manifest.get("files") or {})) \
            if now.get("dirty") else []
        if now.get("commit") != recorded_git.get("commit") or dirty:
            git = {"recorded": recorded_git.get("commit"), "live": now.get("commit"),
                   "dirty": bool(dirty), "dirty_paths": dirty[:50]}
    parts = []
    if files:
        parts.append("config files %s" % ", ".join(files))
    if images:
        parts.append("images of %s" % ", ".join(images))
    if added:
        parts.append("services not in the snapshot %s" % ", ".join(added))
    if git:
        parts.append("git %s -> %s%s" % ((git["recorded"] or "?")[:12], (git["live"] or "?")[:12],
                                         " (dirty)" if git["dirty"] else ""))
    return {
        "images": images,
        "services_added": added,
        "services_removed": removed,
        "files": files,
        "git": git,
        "any": bool(images or added or files or git),
        "summary": "; ".join(parts) or "none",
        # What runs now, the state a rollback goes away from (for the audit log and bad markers).
        "live": {
            "images": {name: entry["image_id"] for name, entry in sorted(live.items()) if entry["image_id"]},
            "commit": now.get("commit"),
        },
    }
