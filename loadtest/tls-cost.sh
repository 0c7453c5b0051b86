#!/usr/bin/env bash
# The cost of TLS termination, measured with real clients in one run: switchyard and
# HAProxy, each with a plaintext and a TLS listener in front of the same nginx, in
# alternating rounds; prints medians and the TLS / plaintext ratio of each.
#
#   loadtest/tls-cost.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 3 s per test)
#
# Tests:
# - bulk: wrk, 4 connections fetching a 16 MiB body, MiB/s;
# - small requests: wrk, 64 keep-alive connections, 128-byte bodies, req/s and p99;
# - new connections: `openssl s_time -new` (a full handshake per connection, no
#   resumption) against the TLS listeners, and wrk with `Connection: close` against
#   both kinds, connections/s;
# - memory per idle TLS session: the proxy's RSS growth with 1000 idle TLS clients
#   (Python's ssl module), once per proxy after the rounds.
# The certificate is a throw-away ECDSA P-256 one made here with openssl. Every
# process it starts is stopped by PID at the end; everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-3}

source loadtest/common.sh
install_missing wrk:wrk haproxy:haproxy nginx:nginx-light openssl:openssl
cargo build --release -q -p switchyard
SY=target/release/switchyard

work_dir tls-cost

# --- certificate ------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/haproxy.pem"

# --- backend: nginx with a 128-byte body and a 16 MiB file --------------------------------
HTTP=$(port)
mkdir -p "$WORK/www"
head -c $((16 * 1024 * 1024)) /dev/zero > "$WORK/www/big"
chmod 755 "$WORK" "$WORK/www" && chmod 644 "$WORK/www/big"   # nginx workers run unprivileged
BODY=$(printf 'x%.0s' $(seq 128))
cat > "$WORK/backend.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; sendfile on;
  server { listen 127.0.0.1:$HTTP; root $WORK/www;
    location = /small { return 200 "$BODY"; }
    location = /big { } } }
CONF
nginx -c "$WORK/backend.conf" & PIDS+=($!)

# --- proxies: a plaintext and a TLS listener each ----------------------------------------
declare -A PORT
for t in switchyard switchyard-tls haproxy haproxy-tls; do PORT[$t]=$(port); done
cat > "$WORK/switchyard.toml" <<CONF
[check]
interval = "1s"
[backends.http]
address = "127.0.0.1:$HTTP"
[pools.http]
backends = ["http"]
[listeners.plain]
listen = "127.0.0.1:${PORT[switchyard]}"
pool = "http"
[listeners.tls]
listen = "127.0.0.1:${PORT[switchyard-tls]}"
pool = "http"
[listeners.tls.tls]
certificates = [{ cert = "$WORK/cert.pem", key = "$WORK/key.pem" }]
CONF
RUST_LOG=warn "$SY" run --config "$WORK/switchyard.toml" 2>"$WORK/switchyard.log" & PIDS+=($!); SY_PID=$!
cat > "$WORK/haproxy.cfg" <<CONF
global
    maxconn 4000
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
listen plain
    bind 127.0.0.1:${PORT[haproxy]}
    server s 127.0.0.1:$HTTP
listen tls
    bind 127.0.0.1:${PORT[haproxy-tls]} ssl crt $WORK/haproxy.pem
    server s 127.0.0.1:$HTTP
CONF
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & PIDS+=($!); HA_PID=$!
for t in "${!PORT[@]}"; do wait_port "${PORT[$t]}" "$t"; done
sleep 1.5   # switchyard's first check

url() { case $1 in *-tls) echo "https://127.0.0.1:${PORT[$1]}$2" ;; *) echo "http://127.0.0.1:${PORT[$1]}$2" ;; esac; }
TARGETS=(switchyard switchyard-tls haproxy haproxy-tls)
mib() { awk '/Transfer\/sec/ {v=$2; if (v ~ /GB$/) {sub("GB","",v); v=v*1024} else if (v ~ /MB$/) {sub("MB","",v)} else if (v ~ /KB$/) {sub("KB","",v); v=v/1024}; print v}'; }
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    out=$(wrk -t2 -c4 -d"${SECS}s" "$(url "$t" /big)" 2>/dev/null)
    grep -q "Non-2xx" <<<"$out" && { echo "bulk test got errors from $t: $out" >&2; exit 1; }
    record "$t" bulk "$(mib <<<"$out")"
    out=$(wrk -t2 -c64 -d"${SECS}s" --latency "$(url "$t" /small)" 2>/dev/null)
    record "$t" rps "$(wrk_rps "$out")"
    record "$t" p99 "$(wrk_p99_ms "$out")"
    out=$(wrk -t2 -c16 -d"${SECS}s" -H "Connection: close" "$(url "$t" /small)" 2>/dev/null)
    record "$t" cps "$(wrk_rps "$out")"
    case $t in *-tls)
      out=$(timeout $((SECS + 30)) openssl s_time -connect "127.0.0.1:${PORT[$t]}" -new -time "$SECS" 2>/dev/null | grep 'connections in' | tail -1 || true)
      record "$t" full "$(awk '{print $1 / $4}' <<<"$out")" ;;
    esac
  done
  echo "round $round done" >&2
done

record switchyard-tls idlekb "$(idle_kb "$SY_PID" "${PORT[switchyard-tls]}" 1000 "$WORK/cert.pem")"
record haproxy-tls idlekb "$(idle_kb "$HA_PID" "${PORT[haproxy-tls]}" 1000 "$WORK/cert.pem")"

python3 - <<PY
$(py_results)
rows = [("bulk, 4 conns x 16 MiB bodies, MiB/s", "bulk"), ("wrk 64 conns 128 B, req/s", "rps"),
        ("wrk p99 latency, ms", "p99"), ("new connections/s (wrk, Connection: close)", "cps"),
        ("full handshakes/s (openssl s_time -new, 1 client)", "full"),
        ("memory per idle TLS session, KB (1000 sessions)", "idlekb")]
fmt = lambda v: "-" if v is None else f"{v:g}"
ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
print("| test | switchyard plain | switchyard TLS | TLS / plain | haproxy plain | haproxy TLS | TLS / plain | switchyard TLS / haproxy TLS |")
print("|---|---|---|---|---|---|---|---|")
for name, m in rows:
    sp, st, hp, ht = (med(t, m) for t in ["switchyard", "switchyard-tls", "haproxy", "haproxy-tls"])
    print(f"| {name} | {fmt(sp)} | {fmt(st)} | {ratio(st, sp)} | {fmt(hp)} | {fmt(ht)} | {ratio(ht, hp)} | {ratio(st, ht)} |")
print("(for p99 and memory a ratio above 1 is worse; for the rest it is better)")
PY
