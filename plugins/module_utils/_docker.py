# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docker SDK access shared by the modules: import guard, client, image lookups."""

from __future__ import annotations

import re
import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    import docker
    from docker.errors import APIError, DockerException, ImageNotFound, NotFound
    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only without the SDK
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()

    class DockerException(Exception):  # type: ignore[no-redef]
        pass

    class APIError(DockerException):  # type: ignore[no-redef]
        pass

    class NotFound(APIError):  # type: ignore[no-redef]
        pass

    class ImageNotFound(NotFound):  # type: ignore[no-redef]
        pass


ROLLED_BACK_TAG_PREFIX = "rolled-back-"
# The collection's own rolled-back tags, <repository>:rolled-back-<UTC ts>[-n] (an operator's own
# tags are never touched).
_ROLLED_BACK_TAG = re.compile(r"^%s(\d{8}T\d{6}Z)(?:-(\d+))?$" % re.escape(ROLLED_BACK_TAG_PREFIX))


def require_docker_sdk(module):
    if not HAS_DOCKER:
        module.fail_json(
            msg=missing_required_lib("docker (the Docker SDK for Python)"),
            exception=DOCKER_IMPORT_ERROR,
        )


def docker_client(module, timeout=60):
    """Return a connected Docker client or fail the module with one line.

    The engine is pinged here so that an unreachable engine is reported before
    anything else is attempted, never half way through a change.
    """
    require_docker_sdk(module)
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        module.fail_json(msg="Docker engine unreachable: %s" % one_line(exc))
    return client


def one_line(exc):
    """Squeeze an exception into a single line for `msg`."""
    text = str(getattr(exc, "explanation", None) or exc)
    return " ".join(text.split())


def image_id(client, reference):
    """The image ID (sha256:...) a reference or ID resolves to, or None if absent."""
    try:
        return client.api.inspect_image(reference)["Id"]
    except (ImageNotFound, NotFound):
        return None


def split_reference(reference):
    """Split an image reference into (repository, tag); the tag defaults to `latest`.

    A digest reference (repo@sha256:...) returns the digest as tag with its '@'.
    """
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        return repository, "@" + digest
    last_slash = reference.rfind("/")
    last_colon = reference.rfind(":")
    if last_colon > last_slash:
        return reference[:last_colon], reference[last_colon + 1:]
    return reference, "latest"


def normalize_reference(reference):
    repository, tag = split_reference(reference)
    if tag.startswith("@"):
        return repository + tag
    return "%s:%s" % (repository, tag)


def container_summary(attrs):
    """The part of `docker inspect` output the modules report and compare."""
    state = attrs.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    return {
        "id": attrs.get("Id"),
        "name": (attrs.get("Name") or "").lstrip("/"),
        "image_id": attrs.get("Image"),
        "image": (attrs.get("Config") or {}).get("Image"),
        "state": state.get("Status"),
        "health": health,
        "exit_code": state.get("ExitCode"),
        "started_at": state.get("StartedAt"),
        "service": labels.get("com.docker.compose.service"),
        "number": labels.get("com.docker.compose.container-number"),
    }


def project_containers(client, project_name, include_stopped=True):
    """Inspect every (non one-off) container of a compose project, grouped by service."""
    filters = {"label": ["com.docker.compose.project=%s" % project_name]}
    by_service = {}
    for item in client.api.containers(all=include_stopped, filters=filters):
        labels = item.get("Labels") or {}
        if labels.get("com.docker.compose.oneoff") == "True":
            continue
        try:
            attrs = client.api.inspect_container(item["Id"])
        except NotFound:  # removed between list and inspect
            continue
        summary = container_summary(attrs)
        by_service.setdefault(summary["service"], []).append(summary)
    for containers in by_service.values():
        containers.sort(key=lambda c: int(c["number"] or 0))
    return by_service


# The one rule of when a container is ready, and the states it can be in on the way; every
# reader (health gate, staged start, service waits) goes through these.

def container_problem(summary):
    """None when a container is running and, if it has a healthcheck, healthy; else why not:
    its state (`exited (exit code 1)`, `created`) or its health (`starting`, `unhealthy`)."""
    if summary["state"] != "running":
        if summary["state"] in ("exited", "dead"):
            return "%s (exit code %s)" % (summary["state"], summary["exit_code"])
        return summary["state"]
    if summary["health"] not in (None, "healthy"):
        return summary["health"]
    return None


def crash_problem(summary):
    """None unless the container crashed; else how: exited, dead or `restarting` (its restart
    policy bringing the process back) after a non-zero exit code, or dead. A container still
    starting, unhealthy, or whose process ended with exit code 0 (a one-shot job that finished,
    also under `restart: always`) has not crashed."""
    crashed = summary["exit_code"] not in (0, None)
    if summary["state"] == "dead" or (summary["state"] in ("exited", "restarting") and crashed):
        return "%s (exit code %s)" % (summary["state"], summary["exit_code"])
    return None


def still_starting(summary):
    """A running container whose Docker healthcheck has not decided yet (`starting`)."""
    return summary["state"] == "running" and summary["health"] == "starting"


def failed_for_good(summary):
    """A state that waiting will not fix: stopped, or running and unhealthy after its retries. Not
    `restarting`: its restart policy is bringing it back, and the `unhealthy` the engine shows for
    it then is what it sets at every crash (the next start resets it to `starting`); a crash loop
    is bounded by the caller's deadline."""
    return summary["state"] in ("exited", "dead") or (summary["state"] == "running" and summary["health"] == "unhealthy")


def services_problems(by_service, services):
    """Per service what keeps it from being ready ({} when all are): see container_problem."""
    problems = {}
    for name in services:
        containers = by_service.get(name) or []
        if not containers:
            problems[name] = "no container"
            continue
        reasons = [container_problem(c) for c in containers]
        reasons = [r for r in reasons if r]
        if reasons:
            problems[name] = "; ".join(reasons)
    return problems


# -- retention of the images rollbacks replaced ------------------------------------------------

def _familiar(repository):
    """The repository as the engine lists it (docker.io/library/nginx is nginx)."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if repository.startswith(prefix):
            return repository[len(prefix):]
    return repository


def rolled_back_tags_beyond(client, repository, keep):
    """The collection's rolled-back tags of `repository` beyond its newest `keep`, oldest first."""
    found = {}
    for image in client.api.images(filters={"reference": "%s:%s*" % (repository, ROLLED_BACK_TAG_PREFIX)}):
        for tag in image.get("RepoTags") or ():
            name, version = split_reference(tag)
            match = _ROLLED_BACK_TAG.match(version)
            if match and _familiar(name) == _familiar(repository):
                found[tag] = (match.group(1), int(match.group(2) or 1), tag)
    ordered = sorted(found, key=found.get)
    return ordered[:max(0, len(ordered) - keep)]


def prune_rolled_back(client, references, keep, check_mode=False):
    """Retention of the images rollbacks replaced: in the repository of each of `references`, the
    rolled-back tags beyond the newest `keep` are untagged (0 keeps all); an image goes with its
    last tag unless a container or a snapshot's pin still holds it. Never raises: a tag that
    cannot go stays, named with why. Returns (untagged, or in check mode to untag; kept)."""
    untagged, kept = [], []
    if not keep:
        return untagged, kept
    for repository in sorted(set(split_reference(reference)[0] for reference in references if reference)):
        try:
            old = rolled_back_tags_beyond(client, repository, keep)
        except APIError as exc:
            kept.append("%s:%s*: %s" % (repository, ROLLED_BACK_TAG_PREFIX, one_line(exc)))
            continue
        for tag in old:
            if check_mode:
                untagged.append(tag)
                continue
            try:
                client.api.remove_image(tag, noprune=False)
                untagged.append(tag)
            except APIError as exc:
                kept.append("%s: %s" % (tag, one_line(exc)))
    return untagged, kept
