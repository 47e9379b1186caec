"""Issue figure: `auto` on an image-only breakage costs at most 1 s more than tier 2 called directly.

Each round breaks the demo app with the v2 image, rolls back with playbooks/rollback_images.yml,
breaks it again and rolls back with playbooks/rollback.yml (tier auto, which must pick the
image tier). Prints the medians of RUNS rounds, the difference and the worst round.
"""

from __future__ import annotations

import os
import shutil
import sys

from common import (
    REPO, Stack, docker_client, median, playbook, remove_rolled_back_tags, rolled_back_tags, temp_dir,
    write_inventory,
)

sys.path.insert(0, str(REPO / "bench"))
from bench_rollback_images import deploy  # noqa: E402  (same breakage as the tier 2 bench)

RUNS = int(os.environ.get("RUNS", "3"))


def main():
    work = temp_dir("lastgood-bench-auto-")
    client = docker_client()
    tags_before = rolled_back_tags(client)
    stack = Stack.create(work, client)
    try:
        inventory = write_inventory(work, stack, work / "backups")
        playbook(inventory, "snapshot")
        rounds = []
        for _round in range(RUNS):
            deploy(stack, "lastgood-demo/app:v2")
            direct = playbook(inventory, "rollback_images")[0]
            deploy(stack, "lastgood-demo/app:v2")
            auto, proc = playbook(inventory, "rollback")
            if "tiers: images" not in proc.stdout and "images" not in proc.stdout:
                raise RuntimeError("auto did not use the image tier:\n" + proc.stdout[-3000:])
            rounds.append((direct, auto))
            print(f"round: rollback_images.yml {direct:.2f} s   rollback.yml (auto) {auto:.2f} s   "
                  f"difference {auto - direct:+.2f} s", flush=True)
        direct = median(r[0] for r in rounds)
        auto = median(r[1] for r in rounds)
        worst = max(r[1] - r[0] for r in rounds)
        print()
        print(f"tier 2 directly: {direct:.2f} s   auto: {auto:.2f} s   difference {auto - direct:+.2f} s   "
              f"target <= +1.00 s   {'MET' if auto - direct <= 1 else 'MISSED'} (worst round {worst:+.2f} s)")
        return 0 if auto - direct <= 1 else 1
    finally:
        stack.destroy()
        remove_rolled_back_tags(client, tags_before)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
