"""Issue figures for blue-green switching (playbooks/switch_color.yml) on demo/bluegreen.

A 20 Hz prober sends GET /version through nginx while the playbook switches blue -> green and
back (RUNS rounds, two switches each). Prints the probes sent, the failed ones (target: 0) and
the switch time: the playbook's wall time (gate included) and the module's own time (rewrite,
nginx -t, reload, new workers serving, marker).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from common import REPO, docker_client, median, temp_dir

import ansible_run  # noqa: E402  (tests/integration, put on sys.path by common)
import bluegreen_support  # noqa: E402
from prober import Prober

RUNS = int(os.environ.get("RUNS", "3"))
# A request is failed when it errors or gets no answer within 2 s. The prober's default of 0.5 s
# counts an answer slowed by a busy machine (2 shared cores) as a failure, which is not what
# a switch does to traffic.
PROBE_TIMEOUT_S = 2.0


def main():
    work = temp_dir("lastgood-bench-bluegreen-")
    stack = bluegreen_support.BlueGreenStack.create(work, docker_client())
    try:
        inventory = ansible_run.write_inventory(work, stack.host_vars())
        walls, module_times, total_probes, total_failed = [], [], 0, 0
        for _round in range(RUNS):
            for target in ("green", "blue"):
                with Prober(stack.url("/version"), rate_hz=20, timeout_s=PROBE_TIMEOUT_S) as prober:
                    time.sleep(0.3)  # a baseline before the switch starts
                    run = ansible_run.run_playbook("switch_color", inventory, extra_vars={"blue_green_target_color": target})
                    answered = stack.version()
                    time.sleep(0.3)
                if run.rc != 0:
                    raise RuntimeError("switch_color.yml to %s failed: %s" % (target, run.failure_msg()))
                if answered != target:
                    raise RuntimeError("after the switch to %s nginx answered %s" % (target, answered))
                probes, failed = prober.counts()
                total_probes += probes
                total_failed += failed
                walls.append(run.duration_s)
                module_times.append(float(run.outcome()["switch_s"]))
                print("switch to %-5s playbook %.2f s  module %.2f s  probes %d  failed %d"
                      % (target, walls[-1], module_times[-1], probes, failed), flush=True)
        print()
        print("blue-green switch (%d switches): probes through nginx %d, failed %d (target 0) %s"
              % (len(walls), total_probes, total_failed, "MET" if total_failed == 0 else "MISSED"))
        print("switch time: playbook median %.2f s (max %.2f s), module median %.2f s (max %.2f s)"
              % (median(walls), max(walls), median(module_times), max(module_times)))
        return 0 if total_failed == 0 else 1
    finally:
        stack.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    sys.exit(main())
