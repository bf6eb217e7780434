#!/usr/bin/env bash
# Checks deploy/alertmanager/alertmanager.yml with amtool: the config parses, and each alert
# of tests/routes.txt reaches the receiver that line names.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="$here/../alertmanager.yml"
amtool check-config "$config" >/dev/null
failed=0
while read -r receiver labels; do
  case "$receiver" in ''|'#'*) continue ;; esac
  # shellcheck disable=SC2086 # the labels are separate arguments
  if ! amtool config routes test --config.file="$config" --verify.receivers="$receiver" \
      $labels >/dev/null 2>&1; then
    echo "alertmanager: {$labels} does not reach $receiver (it reaches:" \
      "$(amtool config routes test --config.file="$config" $labels 2>/dev/null | tr '\n' ' '))" >&2
    failed=1
  fi
done < "$here/routes.txt"
exit "$failed"
