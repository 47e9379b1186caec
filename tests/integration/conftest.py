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
(autouse)     at the end of the session, the snapshot pins (image tags lastgood-<project>-<id>)
              of the tests' projects (lg...) that a test left behind are untagged.
"""

from __future__ import annotations

import re
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


# A snapshot's pin of an image: <repository>:lastgood-<project>-<snapshot id>; the tests' projects are lg...
TEST_PIN_TAG = re.compile(r":lastgood-lg[^:/]*$")


def _test_pins():
    """The pin tags of test projects the engine holds (empty when it does not answer)."""
    try:
        client = stacks.docker_client()
        try:
            images = client.api.images()
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no engine: nothing to clean
        return set()
    return {tag for image in images for tag in image.get("RepoTags") or () if TEST_PIN_TAG.search(tag)}


@pytest.fixture(scope="session", autouse=True)
def no_snapshot_pins_left():
    """Most tests untag the pins of their snapshots (ansible_run.remove_snapshot_pins); a test that
    fails halfway, or whose snapshots live in a backup root of its own, may not. At the end of the
    session every test pin that did not exist when it began is untagged (only the tag: the image
    stays while other tags or containers use it), so that `make test` leaves no tags behind."""
    before = _test_pins()
    yield
    left = _test_pins() - before
    if left:
        client = stacks.docker_client()
        try:
            for tag in sorted(left):
                try:
                    client.api.remove_image(tag, noprune=True)
                except Exception:  # noqa: BLE001 - gone meanwhile
                    pass
        finally:
            client.close()


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
