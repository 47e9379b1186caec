"""Fixtures for integration tests against the Docker engine and the demo stack.

demo_images   (session) builds the images once with scripts/build-images.sh (a no-op when
              they exist); stops the whole session with a clear message if the engine does
              not answer.
stack         a factory: ``s = stack()`` starts a private copy of demo/stack and returns a
              stacks.Stack (``.dir``, ``.project``, ``.ports``, ``.compose()``,
              ``.container_id()``, ``.image_id()``, ``.url()``...). Every stack it started is
              torn down (containers, volumes, its app image tag) after the test, pass or fail.
module_stack  the same factory, module-scoped: for the tests of one file that share stacks
              (each costs ~4 s to start); torn down after the file's last test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:  # tests/integration may or may not be a package
    from . import stacks
except ImportError:
    # Not a package: make stacks importable whatever pytest's import mode.
    if str(Path(__file__).parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent))
    import stacks


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = stacks.docker_client()
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure means the same thing here
        pytest.exit(
            f"integration tests need a running Docker engine, which does not answer ({err}). "
            "Start it with: sudo scripts/setup-engine.sh",
            returncode=1,
        )
    yield client
    client.close()


@pytest.fixture(scope="session")
def demo_images(docker_client):
    """Build (or find up to date) every image the demo stack uses."""
    proc = stacks.run(["bash", stacks.BUILD_SCRIPT], check=False, timeout=900)
    if proc.returncode != 0:
        pytest.exit(
            f"{stacks.BUILD_SCRIPT} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
            returncode=1,
        )
    return proc.stdout


def _stack_factory(parent: Path, docker_client):
    """Yield a factory of demo stacks created under parent; tear every one down afterwards."""
    created: list[stacks.Stack] = []

    def factory(extra_env=None, up=True) -> stacks.Stack:
        new = stacks.Stack.create(parent, docker_client, extra_env=extra_env, up=up)
        created.append(new)
        return new

    yield factory
    errors = []
    for each in reversed(created):
        try:
            each.destroy()
        except Exception as err:  # noqa: BLE001 - tear down the others all the same
            errors.append(f"{each.project}: {err}")
    if errors:
        pytest.fail("teardown failed: " + "; ".join(errors))


@pytest.fixture
def stack(demo_images, docker_client, tmp_path):
    """Factory of running demo stacks: ``stack(extra_env=None, up=True)``.

    extra_env is added to the stack's .env (e.g. {"APP_ERROR_RATE": "0.5"}).
    """
    yield from _stack_factory(tmp_path, docker_client)


@pytest.fixture(scope="module")
def module_stack(demo_images, docker_client, tmp_path_factory):
    """Like ``stack``, but the stacks live until the last test of the module has run."""
    yield from _stack_factory(tmp_path_factory.mktemp("stacks"), docker_client)
