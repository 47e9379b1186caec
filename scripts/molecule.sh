#!/usr/bin/env bash
# Run the molecule scenarios of the collection's roles (extensions/molecule/<scenario>/), each
# with its full `molecule test` sequence, and print a summary with the wall time of each.
#
#   scripts/molecule.sh                       # every scenario
#   scripts/molecule.sh health_gate snapshot  # only these
#   scripts/molecule.sh --list                # the scenario names
#
# Needs the Docker engine (scripts/setup-engine.sh); the venv and the local images are
# brought up to date first (scripts/setup-venv.sh, scripts/build-images.sh; both take well
# under a few seconds when nothing changed). Each scenario runs its own copy of the demo stack
# on its own ports on 127.0.0.1 and removes it afterwards, also when it fails.
# The output of each scenario is also written to tests/output/molecule/<scenario>.log.
# Exit status: 0 when every scenario passed, 1 when one failed, 2 on a usage error.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCENARIO_ROOT="$REPO_ROOT/extensions/molecule"
LOG_DIR="$REPO_ROOT/tests/output/molecule"

export LC_NUMERIC=C
usage() { printf 'usage: %s [--list] [scenario ...]\n' "$0"; }
log() { printf 'molecule.sh: %s\n' "$*" >&2; }
# Seconds since START (an $EPOCHREALTIME value), one decimal.
seconds_since() { awk -v start="$1" -v now="$EPOCHREALTIME" 'BEGIN { printf "%.1f", now - start }'; }

all_scenarios() {
    local file
    for file in "$SCENARIO_ROOT"/*/molecule.yml; do
        [ -e "$file" ] || continue
        basename "$(dirname "$file")"
    done
}

scenarios=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --list) all_scenarios; exit 0 ;;
        -*) usage >&2; exit 2 ;;
        *)
            if [ ! -f "$SCENARIO_ROOT/$arg/molecule.yml" ]; then
                log "no scenario '$arg' (have: $(all_scenarios | tr '\n' ' '))"
                exit 2
            fi
            scenarios+=("$arg")
            ;;
    esac
done
if [ "${#scenarios[@]}" -eq 0 ]; then
    mapfile -t scenarios < <(all_scenarios)
fi
if [ "${#scenarios[@]}" -eq 0 ]; then
    log "no scenarios under $SCENARIO_ROOT"
    exit 2
fi

"$REPO_ROOT/scripts/setup-venv.sh"
"$REPO_ROOT/scripts/build-images.sh"

cd "$REPO_ROOT"
export VIRTUAL_ENV="$REPO_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export NO_COLOR="${NO_COLOR:-1}"
# docker compose gives the caller's environment precedence over a stack's .env: variables
# like these, exported in the calling shell, would change the ports, image or project of
# every scenario's stack. Molecule's own location overrides would move the scenarios.
unset APP_IMAGE APP_PORT PG_PORT STATIC_PORT APP_ERROR_RATE APP_EXTRA_LATENCY_MS \
    POSTGRES_DB POSTGRES_PASSWORD COMPOSE_PROJECT_NAME COMPOSE_FILE COMPOSE_PROFILES \
    MOLECULE_GLOB MOLECULE_EPHEMERAL_DIRECTORY MOLECULE_PROJECT_DIRECTORY
mkdir -p "$LOG_DIR"

results=()
failed=0
total_start=$EPOCHREALTIME
for scenario in "${scenarios[@]}"; do
    log "scenario $scenario: molecule test (log: ${LOG_DIR#"$REPO_ROOT"/}/$scenario.log)"
    start=$EPOCHREALTIME
    status=0
    # The shared settings are named explicitly: molecule would prefer a .config/molecule/config.yml
    # at the repository root or in the home directory, if one existed, to the collection's.
    molecule --base-config "$SCENARIO_ROOT/config.yml" test --scenario-name "$scenario" 2>&1 |
        tee "$LOG_DIR/$scenario.log" || status=$?
    elapsed=$(seconds_since "$start")
    if [ "$status" -eq 0 ]; then
        results+=("$(printf '%-18s passed  %7s s' "$scenario" "$elapsed")")
    else
        results+=("$(printf '%-18s FAILED  %7s s  (exit %d, see %s)' "$scenario" "$elapsed" "$status" \
            "${LOG_DIR#"$REPO_ROOT"/}/$scenario.log")")
        failed=$((failed + 1))
    fi
done
total=$(seconds_since "$total_start")

printf '\nmolecule.sh: summary\n'
printf '  %s\n' "${results[@]}"
printf '  %-18s         %7s s\n' total "$total"
if [ "$failed" -gt 0 ]; then
    printf 'molecule.sh: %d of %d scenario(s) FAILED\n' "$failed" "${#scenarios[@]}"
    exit 1
fi
printf 'molecule.sh: all %d scenario(s) passed\n' "${#scenarios[@]}"
