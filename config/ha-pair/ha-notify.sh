#!/bin/sh
# keepalived's notify hook for the switchyard pair: one line per transition, to the
# system log (tag switchyard-ha) and, when HA_NOTIFY_LOG is set, appended to that file.
# keepalived passes: $1 the host's name from the config line, then the instance type,
# its name, the new state (MASTER, BACKUP, FAULT, STOP) and the priority.
host=$1 state=$4 priority=$5
line="$(date +%s.%N) $host $state $priority"
logger -t switchyard-ha "$line" 2>/dev/null || true
if [ -n "${HA_NOTIFY_LOG:-}" ]; then
  echo "$line" >> "$HA_NOTIFY_LOG"
fi
