# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # A tier module run on its own against the project's lock (module_utils/_orchestrate.py).
    DOCUMENTATION = r"""
options:
  holder:
    description:
      - The run this task belongs to (C(host), C(pid), C(pid_start), C(user)). Set by the action plugin
        from the controller; give it only to act as another run.
      - While another live run holds the project's lock (a rollback or a deploy in progress), the module
        refuses with one line naming the holder and changes nothing, in check mode too. The lock of the
        run this task belongs to (the orchestrator or a deploy including the tier) does not stop it,
        nor does a lock whose holder is dead.
      - When nobody holds the lock, the module takes it for this run while it works (reason
        C(<module> on its own)) and releases it when it ends, so that a rollback, a deploy or another
        tier started meanwhile is refused instead of acting on the same stack. Not in check mode.
      - A run that held the lock on its own and changed something (a success, or a failure after its
        first change), or that took a live run's lock over (O(break_lock)), appends one line to the project's audit log (C(<backup_root>/<project>/audit.jsonl),
        C(kind=tier), the module as C(action), the result, the controller and user, its C(actions) and
        the snapshot as C(to)), as every rollback, deploy and emergency run does. A run that changed
        nothing leaves none. A line that cannot be written is a warning of the result.
    type: dict
  break_lock:
    description:
      - Take the project's lock over even from a live run, instead of being refused. Only when you know that run
        is gone or hung (its controller is down, its job was killed). The result warns and the audit line names
        the run whose lock was taken (C(lock_taken_over_from)); that run, should it go on, finds it no longer holds
        the lock and stops. In check mode nothing is taken.
    type: bool
    default: false
  reason:
    description:
      - Why this run happens (for example C(5xx after release 4.2)). When the module takes the lock for its own
        run, the lock's reason is C(<module> on its own) followed by it, which a refused run and the audit line show.
        Ignored under the lock of the run this task belongs to, which has its own reason.
    type: str
    default: ""
"""
