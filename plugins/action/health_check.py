# Copyright (c) lastgood.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of lastgood.rollback.health_check: validate the checks on the controller.

A malformed URL, an invalid regex or a misspelt option is then refused without a round trip
to the managed host, and a preflight (validate_only) costs no module run at all, which
matters because every rollback validates its gate before changing anything.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.lastgood.rollback.plugins.module_utils import _health

MODULE = "lastgood.rollback.health_check"


class ActionModule(ActionBase):

    _VALID_ARGS = frozenset(_health.module_argument_spec())

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # no longer has any effect

        validation = ArgumentSpecValidator(_health.module_argument_spec()).validate(dict(self._task.args))
        if validation.error_messages:
            result.update(failed=True, msg=validation.error_messages[0])
            return result
        params = validation.validated_parameters
        try:
            # PGPASSWORD is the managed host's business: only the spec is checked here.
            checks = _health.parse_checks(params["checks"], environ={})
            _health.PollSettings.from_params(params)
        except _health.HealthSpecError as exc:
            result.update(failed=True, msg=str(exc))
            return result

        if params["validate_only"]:
            result.update(changed=False, **_health.validation_result(checks))
            return result

        result.update(self._execute_module(module_name=MODULE, module_args=self._task.args, task_vars=task_vars))
        return result
