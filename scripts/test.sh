#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs if it is missing.
# Usage: scripts/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

# --- system packages the integration tests drive (real peers, real clients) ---
need_pkgs=()
for pair in "mariadbd:mariadb-server" "mariadb:mariadb-client" "sysbench:sysbench" "promtool:prometheus" "chromium:chromium" "curl:curl" "keepalived:keepalived" "ip:iproute2" "haproxy:haproxy" "nginx:nginx" "etcd:etcd-server" "etcdctl:etcd-client" "protoc:protobuf-compiler" "rsync:rsync" "dnsmasq:dnsmasq" "dig:dnsutils"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need_pkgs+=("$pkg")
done
# the Galera provider is a library, not a command
[ -f /usr/lib/galera/libgalera_smm.so ] || need_pkgs+=("galera-4")
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- the Python peers and clients (pymongo, nx-27017, SecantusDB) live in a venv that
#     the tests create on first use (target/lab-venv); python3 with venv is needed ---
python3 -c "import venv" || { echo "python3 with the venv module is required" >&2; exit 1; }

# --- cargo-deb builds the Debian package that tests/package.rs installs (pinned: the
#     test packages the debug binary, a use later releases may refuse) ---
cargo deb --version >/dev/null 2>&1 || cargo install --locked -q cargo-deb --version 3.8.0

# --- one crypto provider only (two make rustls panic at run time) ---
for forbidden in aws-lc-rs openssl-sys; do
  if cargo tree -q -i "$forbidden" >/dev/null 2>&1; then
    echo "dependency check failed: $forbidden is in the tree (use ring only)" >&2
    exit 1
  fi
done

# --- lints: clippy clean, every warning an error (the crate roots deny unsafe code,
#     missing docs and 2018-idiom lapses too) ---
cargo clippy --workspace --all-targets -q -- -D warnings

# --- the tests: unit, integration (proxy, MariaDB, MongoDB peers, browser), the short
#     failover drill, and every bench compiled and run once ---
cargo test --workspace --all-targets "$@"
