#!/usr/bin/env bash
# What the session access log costs: two switchyard processes in front of one nginx
# (128-byte bodies), the same config but `[log] access = true` in one and `false` in
# the other, both logging to a file at the default level; alternating rounds of wrk
# with `Connection: close` (one session, so one access line, per request: the worst
# case) and with 64 kept connections. Prints medians and the on/off ratios, and the
# access lines written per second.
#
#   loadtest/access-cost.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-5}

source loadtest/common.sh
install_missing wrk:wrk nginx:nginx-light
cargo build --release -q -p switchyard
SY=target/release/switchyard
work_dir access-cost

HTTP=$(port)
nginx_backend "$HTTP"

declare -A P PID
for t in on off; do
  P[$t]=$(port)
  cat > "$WORK/$t.toml" <<CONF
[log]
access = $([ "$t" = on ] && echo true || echo false)
[backends.http]
address = "127.0.0.1:$HTTP"
[pools.http]
backends = ["http"]
[listeners.http]
listen = "127.0.0.1:${P[$t]}"
pool = "http"
CONF
  env -u RUST_LOG "$SY" run --config "$WORK/$t.toml" 2>"$WORK/$t.log" & PIDS+=($!); PID[$t]=$!
done
wait_port "$HTTP" nginx
for t in on off; do wait_port "${P[$t]}" "switchyard access=$t"; done
sleep 1

for r in $(seq "$ROUNDS"); do
  for t in on off; do
    before=$(grep -c switchyard::access "$WORK/$t.log" || true)
    out=$(wrk -t2 -c16 -d"${SECS}s" -H "Connection: close" "http://127.0.0.1:${P[$t]}/" 2>/dev/null)
    record "$t" cps "$(wrk_rps "$out")"
    after=$(grep -c switchyard::access "$WORK/$t.log" || true)
    record "$t" lines "$(( (after - before) / SECS ))"
    out=$(wrk -t2 -c64 -d"${SECS}s" --latency "http://127.0.0.1:${P[$t]}/" 2>/dev/null)
    record "$t" rps "$(wrk_rps "$out")"
  done
  echo "round $r done" >&2
done

python3 - <<PY
$(py_results)
print(f"access log cost, {$ROUNDS} rounds of {$SECS} s, medians (on = [log] access = true):")
for m, label in (("cps", "new connections/s (Connection: close)"), ("rps", "req/s, 64 kept connections")):
    on, off = med("on", m), med("off", m)
    print(f"  {label:40} on {on:9.0f}  off {off:9.0f}  on/off {on / off:.3f}")
print(f"  access lines written per second          on {med('on', 'lines'):9.0f}  off {med('off', 'lines'):9.0f}")
PY
