#!/usr/bin/env python
# lastgood-rollback offline get-pip stand-in
#
# Offline stand-in for the pip bootstrap script ("get-pip.py") that ansible-test
# downloads from ci-files.testing.ansible.com when it creates a virtual environment
# with --venv. That host is not reachable from our build/CI machines, so
# scripts/setup-venv.sh copies this file to ~/.ansible/test/cache/get_pip_<version>.py
# (the cache path ansible-test checks before downloading).
#
# ansible-test runs it (through its quiet_pip.py wrapper) inside the freshly created,
# pip-less virtual environment as:
#     python get_pip_<version>.py --disable-pip-version-check pip==<version> --no-setuptools --no-wheel
#
# What it does:
#   1. ensurepip.bootstrap() installs the pip bundled with this Python (no network);
#   2. os.environ is restored afterwards: ensurepip deletes every PIP_* variable and
#      sets PIP_CONFIG_FILE=/dev/null, which would hide this machine's package index
#      settings (pip.conf, PIP_* variables) from the next step;
#   3. --no-setuptools / --no-wheel are dropped (they are get-pip.py options, not
#      pip install options);
#   4. `pip install <remaining args>` installs the requested pip version from the
#      configured package index.
#
# The first line after the shebang is a marker: setup-venv.sh only replaces a cached
# get_pip_*.py that carries it (a genuine downloaded get-pip.py is left alone).

import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY_OPTIONS = frozenset(("--no-setuptools", "--no-wheel"))


def main(argv):
    saved_environ = dict(os.environ)
    try:
        ensurepip.bootstrap()
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)

    pip_args = [arg for arg in argv if arg not in GET_PIP_ONLY_OPTIONS]
    if not [arg for arg in pip_args if not arg.startswith("-")]:
        return 0  # nothing requested beyond the bundled pip

    return subprocess.call([sys.executable, "-m", "pip", "install"] + pip_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
