#!/usr/bin/env bash
# Instructions per proxied request and per new connection, switchyard against HAProxy
# under the same client: a figure that does not move with the machine's noise
# (valgrind's callgrind counts instructions; `perf stat` is not supported on every
# machine). Each proxy runs under callgrind in front of one nginx (128-byte bodies);
# its counters are zeroed, a Python client sends REQUESTS requests on one kept
# connection, the counters are dumped; then the same with a new connection per
# request. The count covers the whole proxy process (every thread) in that window.
#
#   loadtest/instructions.sh [REQUESTS]      (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-2000}

source loadtest/common.sh
install_missing valgrind:valgrind haproxy:haproxy nginx:nginx-light
cargo build --release -q -p switchyard
SY=target/release/switchyard
work_dir instructions

HTTP=$(port)
nginx_backend "$HTTP"
wait_port "$HTTP" nginx

# client MODE PORT N — N GETs through 127.0.0.1:PORT, on one kept connection
# (MODE=kept) or a new connection each (MODE=close); fails on any non-200.
client() {
  python3 - "$@" <<'PY'
import http.client, sys
mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = None
for _ in range(n):
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Connection": "close"} if mode == "close" else {}
    conn.request("GET", "/", headers=headers)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"status {response.status}")
    if mode == "close":
        conn.close()
        conn = None
PY
}

# instructions PID — the instruction count of the last callgrind dump of PID.
instructions() {
  local file
  file=$(ls -t "$WORK"/callgrind.out."$1".* | head -1)
  awk '/^summary:/ {print $2}' "$file"
}

# measure NAME PORT PID — instructions per request (kept, then close) for one proxy.
measure() {
  local mode
  for mode in kept close; do
    client kept "$2" 50                    # warm: connections made, buffers pooled
    callgrind_control -z "$3" >/dev/null 2>&1
    client "$mode" "$2" "$REQUESTS"
    callgrind_control -d "$3" >/dev/null 2>&1
    record "$1" "$mode" "$(python3 -c "print(round($(instructions "$3") / $REQUESTS))")"
  done
}

VG=(valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p")

SYPORT=$(port)
cat > "$WORK/switchyard.toml" <<CONF
# Checks as rare as allowed, so they hardly count in the window.
[check]
interval = "1h"
[log]
access = false
[backends.http]
address = "127.0.0.1:$HTTP"
[pools.http]
backends = ["http"]
[listeners.http]
listen = "127.0.0.1:$SYPORT"
pool = "http"
CONF
RUST_LOG=warn "${VG[@]}" "$SY" run --config "$WORK/switchyard.toml" 2>"$WORK/switchyard.log" & PIDS+=($!); SYPID=$!
wait_port "$SYPORT" switchyard
measure switchyard "$SYPORT" "$SYPID"

HAPORT=$(port)
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 2
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$HAPORT
  default_backend b
backend b
  server s 127.0.0.1:$HTTP check inter 1h
CONF
"${VG[@]}" haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" & PIDS+=($!); HAPID=$!
wait_port "$HAPORT" haproxy
measure haproxy "$HAPORT" "$HAPID"

python3 - <<PY
$(py_results)
print(f"instructions per request, {$REQUESTS} requests, callgrind (whole process):")
for mode, label in (("kept", "on one kept connection"), ("close", "with a new connection each")):
    s, h = med("switchyard", mode), med("haproxy", mode)
    print(f"  {label:28} switchyard {s:9.0f}  haproxy {h:9.0f}  ratio {s / h:.2f}")
PY
