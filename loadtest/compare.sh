#!/usr/bin/env bash
# Data-path comparison: direct vs switchyard vs HAProxy (plain and splice) vs nginx
# stream, on loopback, with real clients, in alternating rounds; prints medians and
# switchyard's ratios to the best alternative.
#
#   loadtest/compare.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 3 s per test)
#
# Tests: iperf3 (1 stream, Gbit/s), wrk (64 connections, 128-byte HTTP responses,
# req/s and p99), new connections per second (wrk with `Connection: close`), memory per
# idle proxied connection (RSS delta over 2000 idle connections), each proxy's own
# CPU time per GB, per request and per new connection in those runs, switchyard's CPU
# for health-checking 1000 backends at a 1 s interval, and last `sysbench
# oltp_read_write` direct vs switchyard vs HAProxy against a real MariaDB
# (`switchyard-drill sysbench`, 3 x SECONDS per run, with the proxy's and the whole machine's
# CPU time per query). Every process it starts is stopped by
# PID at the end; everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-3}

source loadtest/common.sh
install_missing iperf3:iperf3 wrk:wrk haproxy:haproxy nginx:nginx-light
install_missing /usr/lib/nginx/modules/ngx_stream_module.so:libnginx-mod-stream
cargo build --release -q -p switchyard -p switchyard-loadtest
SY=target/release/switchyard

work_dir compare

# --- backends: iperf3 server, nginx answering 128-byte bodies -------------------------
IPERF=$(port); HTTP=$(port)
iperf3 -s -B 127.0.0.1 -p "$IPERF" >/dev/null 2>&1 & PIDS+=($!)
nginx_backend "$HTTP"

# --- proxies -----------------------------------------------------------------------
declare -A P1 P2 PID
for t in switchyard haproxy haproxy-splice nginx-stream; do P1[$t]=$(port); P2[$t]=$(port); done
P1[direct]=$IPERF; P2[direct]=$HTTP

cat > "$WORK/switchyard.toml" <<CONF
[check]
interval = "1s"
[backends.iperf]
address = "127.0.0.1:$IPERF"
[backends.http]
address = "127.0.0.1:$HTTP"
[pools.iperf]
backends = ["iperf"]
[pools.http]
backends = ["http"]
[listeners.iperf]
listen = "127.0.0.1:${P1[switchyard]}"
pool = "iperf"
[listeners.http]
listen = "127.0.0.1:${P2[switchyard]}"
pool = "http"
CONF
RUST_LOG=warn "$SY" run --config "$WORK/switchyard.toml" 2>"$WORK/switchyard.log" & PIDS+=($!); PID[switchyard]=$!

haproxy_cfg() { # $1 name, $2 extra option
  cat <<CONF
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    $2
listen iperf
    bind 127.0.0.1:${P1[$1]}
    server s 127.0.0.1:$IPERF
listen http
    bind 127.0.0.1:${P2[$1]}
    server s 127.0.0.1:$HTTP
CONF
}
haproxy_cfg haproxy "" > "$WORK/haproxy.cfg"
haproxy_cfg haproxy-splice "option splice-auto" > "$WORK/haproxy-splice.cfg"
haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & PIDS+=($!); PID[haproxy]=$!
haproxy -db -f "$WORK/haproxy-splice.cfg" >/dev/null 2>&1 & PIDS+=($!); PID[haproxy-splice]=$!

cat > "$WORK/stream.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; daemon off; pid $WORK/stream.pid; error_log $WORK/stream.err;
events { worker_connections 8000; }
stream {
  server { listen 127.0.0.1:${P1[nginx-stream]}; proxy_pass 127.0.0.1:$IPERF; }
  server { listen 127.0.0.1:${P2[nginx-stream]}; proxy_pass 127.0.0.1:$HTTP; }
}
CONF
nginx -c "$WORK/stream.conf" & PIDS+=($!)
for t in direct switchyard haproxy haproxy-splice nginx-stream; do wait_port "${P1[$t]}" "$t"; wait_port "${P2[$t]}" "$t"; done
sleep 1.5   # switchyard's first checks
PID[nginx-stream]=$(pgrep -P "$(cat "$WORK/stream.pid")" | head -1)

# Besides each client's figure, the proxy's own CPU time over the run (user + system,
# all threads, from /proc), per unit of work: on 2 shared cores the throughput of a
# proxy is capped by what the clients and backends leave it, while its CPU cost per
# request is what it would scale with on cores of its own.
TARGETS=(direct switchyard haproxy haproxy-splice nginx-stream)
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    pid=${PID[$t]:-}
    c0=$(cpu_ticks "$pid")
    read -r g bytes < <(timeout $((SECS + 30)) iperf3 -c 127.0.0.1 -p "${P1[$t]}" -t "$SECS" -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(round(e["bits_per_second"]/1e9,2), e["bytes"])')
    c1=$(cpu_ticks "$pid")
    record "$t" gbit "$g"
    [ -n "$pid" ] && record "$t" cpu_gb "$(per_unit "$c0" "$c1" "$bytes / 1e9" 1e3)"
    out=$(wrk -t2 -c64 -d"${SECS}s" --latency "http://127.0.0.1:${P2[$t]}/" 2>/dev/null)
    c2=$(cpu_ticks "$pid")
    record "$t" rps "$(wrk_rps "$out")"
    record "$t" p99 "$(wrk_p99_ms "$out")"
    [ -n "$pid" ] && record "$t" cpu_req "$(per_unit "$c1" "$c2" "$(wrk_requests "$out")" 1e6)"
    out=$(wrk -t2 -c16 -d"${SECS}s" -H "Connection: close" "http://127.0.0.1:${P2[$t]}/" 2>/dev/null)
    c3=$(cpu_ticks "$pid")
    record "$t" cps "$(wrk_rps "$out")"
    [ -n "$pid" ] && record "$t" cpu_conn "$(per_unit "$c2" "$c3" "$(wrk_requests "$out")" 1e6)"
  done
  echo "round $round done" >&2
done

for t in switchyard haproxy nginx-stream; do record "$t" idlekb "$(idle_kb "${PID[$t]}" "${P2[$t]}" 2000)"; done

# --- health checking 1000 backends at 1 s ---------------------------------------------
{
  echo '[check]'; echo 'interval = "1s"'
  for i in $(seq 1000); do echo "[backends.b$i]"; echo "address = \"127.0.0.1:$HTTP\""; done
  echo '[pools.p]'; printf 'backends = ['; for i in $(seq 1000); do printf '"b%s",' "$i"; done; echo ']'
  echo '[listeners.l]'; echo "listen = \"127.0.0.1:$(port)\""; echo 'pool = "p"'
} > "$WORK/thousand.toml"
RUST_LOG=warn "$SY" run --config "$WORK/thousand.toml" 2>/dev/null & PIDS+=($!); THOUSAND=$!
sleep 3
t0=$(cpu_ticks "$THOUSAND"); sleep 10; t1=$(cpu_ticks "$THOUSAND")
CHECK_CPU=$(per_unit "$t0" "$t1" 10 100)   # % of one core over 10 s

# --- report ---------------------------------------------------------------------------
python3 - "$CHECK_CPU" <<PY
import sys
$(py_results)
targets = ["direct", "switchyard", "haproxy", "haproxy-splice", "nginx-stream"]
rows = [("iperf3 1 stream, Gbit/s", "gbit", max), ("wrk 64 conns 128 B, req/s", "rps", max),
        ("wrk p99 latency, ms", "p99", min), ("new connections/s (Connection: close)", "cps", max),
        ("memory per idle connection, KB", "idlekb", min),
        ("proxy CPU per GB moved (iperf3), ms", "cpu_gb", min),
        ("proxy CPU per request (wrk 64 conns), µs", "cpu_req", min),
        ("proxy CPU per new connection, µs", "cpu_conn", min)]
print("| test | " + " | ".join(targets) + " | switchyard / best alternative |")
print("|---|" + "---|" * (len(targets) + 1))
for name, m, best in rows:
    vals = [med(t, m) for t in targets]
    alts = [v for t, v in zip(targets, vals) if t not in ("direct", "switchyard") and v is not None]
    sy = med("switchyard", m)
    ratio = f"{sy / best(alts):.2f}" if sy and alts and best(alts) else "-"
    print(f"| {name} | " + " | ".join("-" if v is None else f"{v:g}" for v in vals) + f" | {ratio} |")
print("(ratios above 1 are better for throughput and rates, worse for latency, memory and CPU)")
print(f"\nswitchyard CPU for checking 1000 backends every 1 s: {sys.argv[1]} % of one core")
PY

# --- sysbench through a real MariaDB ------------------------------------------------------
target/release/switchyard-drill sysbench --rounds "$ROUNDS" --secs $((SECS * 3)) --switchyard "$SY"
