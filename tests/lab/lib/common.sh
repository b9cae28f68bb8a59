# shellcheck shell=bash
# Shared by the host-side lab scripts (sourced, bash).

# Where downloaded packages and unpacked trees live between runs.
LAB_CACHE=${POLLUX_LAB_CACHE:-/var/cache/pollux-lab}

lab_say() { printf 'lab: %s\n' "$*" >&2; }
lab_die() { printf 'lab: error: %s\n' "$*" >&2; exit 2; }

# Seconds since the epoch, with decimals.
lab_now() { date +%s.%N; }
lab_since() { awk -v a="$1" -v b="$(lab_now)" 'BEGIN { printf "%.1f", b - a }'; }

# The scenario budget declared in a scenario's header ("# lab-timeout: SECONDS").
lab_scenario_timeout() {
    local t
    t=$(sed -n 's/^# lab-timeout: *\([0-9][0-9]*\).*/\1/p' "$1" | head -1)
    echo "${t:-300}"
}
