"""make bench: run every bench/bench_*.py in turn; each prints its own figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main():
    failed = []
    for script in sorted(BENCH.glob("bench_*.py")):
        print("\n=== %s" % script.name, flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=BENCH, check=False).returncode != 0:
            failed.append(script.name)
    print("\nbench: %d scripts, targets missed in: %s" % (len(list(BENCH.glob("bench_*.py"))), ", ".join(failed) or "none"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
