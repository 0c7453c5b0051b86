# Shared by loadtest/compare.sh and loadtest/tls-cost.sh; sourced from the repository
# root. Everything listens on 127.0.0.1; every process a script starts goes in PIDS
# and is stopped by PID on exit.

# install_missing CMD:PACKAGE... — apt-get installs the packages whose command is missing.
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# work_dir NAME — a temp dir in WORK, removed on exit with every PID in PIDS stopped.
work_dir() {
  WORK=$(mktemp -d "/tmp/sy-$1.XXXXXX")
  PIDS=()
  trap cleanup EXIT
}
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 ($2) never opened" >&2; tail -3 "$WORK"/*.log "$WORK"/*.err >&2 2>/dev/null; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system, every thread) of process $1 in clock ticks; 0 without one.
cpu_ticks() { if [ -n "${1:-}" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
# per_unit T0 T1 UNITS SCALE — CPU seconds between two cpu_ticks readings, times
# SCALE, per unit of work (e.g. SCALE 1e6 and UNITS requests: µs per request).
per_unit() { python3 -c "print(round(($2 - $1) / $(getconf CLK_TCK) * $4 / ($3), 2))"; }

# Results: record TARGET MEASURE VALUE; R holds the values per (target, measure).
declare -A R
record() { R[$1,$2]="${R[$1,$2]:-} $3"; }

# From wrk's output (with --latency): requests/s, requests in all, and p99 in ms.
wrk_rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
wrk_requests() { awk '/requests in/ {print $1}' <<<"$1"; }
wrk_p99_ms() { awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v=v/1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v=v*1000}; print v}' <<<"$1"; }
