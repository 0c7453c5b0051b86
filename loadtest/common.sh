# Shared by loadtest/compare.sh and loadtest/tls-cost.sh; sourced from the repository
# root. Everything listens on 127.0.0.1; every process a script starts goes in PIDS
# and is stopped by PID on exit.

# install_missing CMD:PACKAGE... — apt-get installs the packages whose command (or,
# when it starts with /, file) is missing.
install_missing() {
  local need=() pair what
  for pair in "$@"; do
    what=${pair%%:*}
    case $what in
      /*) [ -e "$what" ] || need+=("${pair#*:}") ;;
      *) command -v "$what" >/dev/null 2>&1 || [ -x "/usr/sbin/$what" ] || need+=("${pair#*:}") ;;
    esac
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

# nginx_backend PORT — nginx on 127.0.0.1:PORT answering every request with a 128-byte
# body (one worker, no access log), in PIDS.
nginx_backend() {
  local body
  body=$(printf 'x%.0s' $(seq 128))
  cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$1; location / { return 200 "$body"; } } }
CONF
  nginx -c "$WORK/backend.conf" & PIDS+=($!)
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 ($2) never opened" >&2; tail -3 "$WORK"/*.log "$WORK"/*.err >&2 2>/dev/null; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system, every thread) of process $1 in clock ticks; 0 without one.
cpu_ticks() { if [ -n "${1:-}" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
# per_unit T0 T1 UNITS SCALE — CPU seconds between two cpu_ticks readings, times
# SCALE, per unit of work (e.g. SCALE 1e6 and UNITS requests: µs per request).
per_unit() { python3 -c "print(round(($2 - $1) / $(getconf CLK_TCK) * $4 / ($3), 2))"; }

# Results: record TARGET MEASURE VALUE; R holds the values per (target, measure). A
# measurement that produced no number stops the run (rather than a median over fewer).
declare -A R
record() {
  [[ $3 =~ ^[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?$ ]] || { echo "$1 $2: no value (got '$3')" >&2; exit 1; }
  R[$1,$2]="${R[$1,$2]:-} $3"
}
# py_results — Python lines that load R into a dict R[(target, measure)] = [values],
# and med(target, measure), the median or None; for a report's heredoc.
py_results() {
  echo "import statistics"
  echo "R = {}"
  local k
  for k in "${!R[@]}"; do echo "R[tuple('$k'.split(','))] = [float(x) for x in '${R[$k]}'.split()]"; done
  echo "med = lambda t, m: statistics.median(R[(t, m)]) if (t, m) in R else None"
}

# idle_kb PID PORT COUNT [CAFILE] — KB of RSS per idle connection through the proxy
# PID: COUNT connections opened to PORT (TLS, sending one request, with CAFILE), RSS
# read once all are open, then closed. A client that fails or stalls fails the run.
idle_kb() {
  local before after fifo client ready=""
  before=$(rss "$1")
  fifo="$WORK/idle.$2"; mkfifo "$fifo"
  python3 - "$2" "$3" "${4:-}" >"$fifo" <<'PY' &
import socket, ssl, sys, time
socket.setdefaulttimeout(10)
port, count, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile) if cafile else None
conns = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
    conns.append(s)
print("ready", flush=True)
time.sleep(4)
PY
  client=$!
  exec 3<"$fifo"
  read -r -t 60 ready <&3 || true
  [ "$ready" = ready ] || { echo "idle connections to port $2 never all opened" >&2; exit 1; }
  sleep 1   # let the proxy settle its per-connection state
  after=$(rss "$1")
  wait "$client" || { echo "the idle-connection client for port $2 failed" >&2; exit 1; }
  exec 3<&-
  rm -f "$fifo"
  python3 -c "print(round(($after - $before) / $3, 2))"
}

# From wrk's output (with --latency): requests/s, requests in all, and p99 in ms.
wrk_rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
wrk_requests() { awk '/requests in/ {print $1}' <<<"$1"; }
wrk_p99_ms() { awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v=v/1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v=v*1000}; print v}' <<<"$1"; }
