#!/bin/sh
# keepalived's notify hook for the switchyard pair: one line per transition,
#   <unix time> <host> <MASTER|BACKUP|FAULT|STOP> <priority>
# to the system log (tag switchyard-ha) and appended to $LOG.
# keepalived calls it as configured ("ha-notify.sh a") with four more arguments:
# the instance type, its name, the new state and the priority.
LOG=/var/log/switchyard/ha-transitions.log
host=$1 state=$4 priority=$5
line="$(date +%s.%N) $host $state $priority"
logger -t switchyard-ha "$line" 2>/dev/null || true
mkdir -p "$(dirname "$LOG")" 2>/dev/null
echo "$line" >> "$LOG" 2>/dev/null || true
