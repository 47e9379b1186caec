# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `docker compose` v2 CLI, always run as an argument list, never through a shell."""

from __future__ import annotations

import json
import os

from ansible_collections.lastgood.rollback.plugins.module_utils._errors import StepError, fail_step

# The files compose looks for in the project directory when none is named, in its order: it
# reads the first one found, then the first override file found on top of it.
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml",
                  "docker-compose.override.yaml")

# Options every module that addresses a compose project shares (documented in the
# lastgood.rollback.project doc fragment).
PROJECT_ARGUMENT_SPEC = dict(
    project_dir=dict(type="path", required=True),
    files=dict(type="list", elements="str"),
    project_name=dict(type="str"),
)


def project_args(params):
    return {key: params.get(key) for key in PROJECT_ARGUMENT_SPEC}


class ComposeError(StepError):
    """A compose command failed; `result` carries cmd, rc, stdout and stderr."""


def _last_error_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class ComposeProject:
    """A compose project as `docker compose` itself sees it in `project_dir`.

    Files and project name default to what compose picks (COMPOSE_FILE, .env,
    `name:`, directory name); once resolved, the name is passed explicitly so
    every later command addresses exactly the same project.
    """

    def __init__(self, module, project_dir, files=None, project_name=None):
        self.module = module
        self.project_dir = os.path.abspath(project_dir)
        self.files = list(files or [])
        self.requested_name = project_name
        self._config = None
        self._docker = None

    # -- validation -----------------------------------------------------
    def check_paths(self):
        """Raise ComposeError for a missing project directory or compose file."""
        if not os.path.isdir(self.project_dir):
            raise ComposeError("project directory %s does not exist" % self.project_dir)
        for name in self.files:
            path = os.path.join(self.project_dir, name)
            if not os.path.isfile(path):
                raise ComposeError("compose file %s does not exist" % path)

    # -- running the CLI --------------------------------------------------
    @property
    def docker_bin(self):
        if self._docker is None:
            self._docker = self.module.get_bin_path("docker", required=True)
        return self._docker

    def base_command(self, with_name=True):
        cmd = [self.docker_bin, "compose", "--project-directory", self.project_dir]
        for name in self.files:
            cmd += ["-f", os.path.join(self.project_dir, name)]
        name = self.name if with_name and self._config is not None else self.requested_name
        if name:
            cmd += ["-p", name]
        return cmd

    def run(self, args, check=True, with_name=True):
        cmd = self.base_command(with_name=with_name) + list(args)
        rc, out, err = self.module.run_command(cmd, cwd=self.project_dir)
        if check and rc != 0:
            raise ComposeError(
                "docker compose %s failed: %s" % (args[0], _last_error_line(err or out)),
                cmd=cmd, rc=rc, stdout=out, stderr=err,
            )
        return rc, out, err

    def run_result(self, args):
        """Run a command that must succeed; cmd, rc, stdout and stderr for the module result."""
        rc, out, err = self.run(args)
        return dict(cmd=self.base_command() + list(args), rc=rc, stdout=out, stderr=err)

    # -- the resolved model ---------------------------------------------
    def config(self):
        """The project as compose resolves it (`docker compose config --format json`)."""
        if self._config is None:
            self.check_paths()
            rc, out, err = self.run(["config", "--format", "json"], with_name=False)
            try:
                self._config = json.loads(out)
            except ValueError as exc:
                raise ComposeError("docker compose config returned invalid JSON: %s" % exc,
                                   cmd=self.base_command(False), rc=rc, stdout=out, stderr=err)
        return self._config

    @property
    def name(self):
        return self.config()["name"]

    @property
    def services(self):
        return self.config().get("services") or {}

    def service_image(self, service):
        """The image reference compose runs for a service (built ones default to <project>-<service>)."""
        spec = self.services[service]
        return spec.get("image") or "%s-%s" % (self.name, service)

    def compose_files(self, with_override=True):
        """The compose files in use, relative to the project directory where possible: those named,
        or COMPOSE_FILE, or the ones compose finds itself, its default file and the override file
        it adds on top (left out with `with_override=False`)."""
        if self.files:
            return list(self.files)
        env_files = self.config_files_from_env()
        if env_files:
            return env_files
        base = self.first_file(COMPOSE_FILES)
        if not base or not with_override:
            return base
        return base + self.first_file(OVERRIDE_FILES)

    def override_files(self):
        """The override file compose adds by itself to this project ([name] or [])."""
        return self.compose_files()[len(self.compose_files(with_override=False)):]

    def first_file(self, candidates):
        """[the first of `candidates` present in the project directory], or []."""
        for candidate in candidates:
            if os.path.isfile(os.path.join(self.project_dir, candidate)):
                return [candidate]
        return []

    def config_files_from_env(self):
        """COMPOSE_FILE as compose reads it from the environment or the project's .env."""
        value = os.environ.get("COMPOSE_FILE")
        if value is None:
            value = read_env_file(os.path.join(self.project_dir, ".env")).get("COMPOSE_FILE")
        if not value:
            return []
        separator = os.environ.get("COMPOSE_PATH_SEPARATOR", os.pathsep)
        return [part for part in value.split(separator) if part]

    def host_files(self, with_override=True):
        """What configures this project on the host, relative to the project directory: its compose
        files, the .env and the services' env_file entries (these only when compose can read the
        project) - the files a snapshot records and the config tier puts back. `with_override`
        as for compose_files."""
        found = set(self.compose_files(with_override)) | {".env"}
        if self.module.get_bin_path("docker"):
            try:
                found.update(self.env_files())
            except ComposeError:
                pass
        return sorted(found)

    def env_files(self):
        """env_file entries of all services, relative to the project directory."""
        found = []
        for spec in self.services.values():
            for entry in spec.get("env_file") or []:
                path = entry.get("path") if isinstance(entry, dict) else entry
                if path:
                    found.append(relative_to(self.project_dir, path))
        return sorted(set(found))


def resolve_inside(base, rel):
    """The path inside `base` (a resolved directory) that `rel` resolves to, links followed; None when
    it resolves outside."""
    real = os.path.realpath(os.path.join(base, rel))
    return os.path.relpath(real, base) if os.path.commonpath([base, real]) == base else None


def recorded_paths(base, names):
    """Compose files by the path a snapshot records their content under: inside `base` (a resolved
    directory), links followed; as given when they resolve outside."""
    return [resolve_inside(base, name) or name for name in names]


def relative_to(base, path):
    path = os.path.join(base, path)
    rel = os.path.relpath(path, base)
    return path if rel.startswith("..") else rel


def read_env_file(path):
    """Minimal KEY=VALUE reader for a compose .env file (comments and quotes handled)."""
    values = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, value = line.split("=", 1)
                key = key.strip()
                if key.startswith("export "):
                    key = key[len("export "):].strip()
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                values[key] = value
    except (IOError, OSError, ValueError):  # ValueError: not UTF-8, compose cannot read it either
        pass
    return values


fail_compose = fail_step


# For modules that only need to know which project's snapshots to read: the name is
# enough, the directory is used to resolve it the way compose would.
PROJECT_LOOKUP_ARGUMENT_SPEC = dict(
    project_dir=dict(type="path"),
    files=dict(type="list", elements="str"),
    project_name=dict(type="str"),
)
PROJECT_LOOKUP_REQUIRED_ONE_OF = [("project_dir", "project_name")]


def resolve_project_name(module, params):
    """The project name given, or the one compose resolves in `project_dir` (fails the module)."""
    if params.get("project_name"):
        return params["project_name"]
    try:
        return ComposeProject(module, params["project_dir"], params.get("files")).name
    except ComposeError as exc:
        fail_compose(module, exc)


def load_project(module, params):
    """A ComposeProject whose configuration is resolved (fails the module with one line)."""
    project = ComposeProject(module, **project_args(params))
    try:
        project.config()
    except ComposeError as exc:
        fail_compose(module, exc)
    return project
