#!/usr/bin/env bash
# Checks deploy/alertmanager/alertmanager.yml and where each kind of keel alert goes
# (`amtool config routes test`); run by `make test`.
set -euo pipefail
CONFIG="$(dirname "${BASH_SOURCE[0]}")/alertmanager.yml"
amtool check-config "$CONFIG" >/dev/null

failed=0
expect() { # expect "<receivers>" label=value...
    local want="$1"
    shift
    local got
    got="$(amtool config routes test --config.file="$CONFIG" "$@")"
    if [[ "$got" == "$want" ]]; then
        echo "ok: $* -> $got"
    else
        echo "FAILED: $* -> $got (expected $want)" >&2
        failed=1
    fi
}

expect "pagerduty,slack" alertname=KeelAvailabilityFastBurn severity=page slo=availability
expect "pagerduty,slack" alertname=KeelMetricsDown severity=page
expect "email,slack" alertname=KeelAvailabilitySlowBurn severity=ticket slo=availability
expect "email,slack" alertname=KeelDatabaseBusy severity=ticket
expect "slack" alertname=SomethingElse
exit $failed
