#!/usr/bin/env bash
# A hub of N connectors (default 8) of about 250 MB each, backed up to moto, restored onto a
# new hub three ways, each into an empty hub root:
#   1. hubvault restore-hub (every connector, one command, one instant, new ids);
#   2. N `hubvault restore` one after another (same objects: --at the instant restore-hub chose);
#   3. the aws CLI: `aws s3 cp` of the N canonical objects in parallel (the bytes only: no
#      check, no id rewrite), and of the N version objects restore-hub actually downloads.
# Peak memory of hubvault with GNU time.
#
#   bench/restore_hub.sh [CONNECTORS] [EVENTS]     (results: docs/BENCHMARKS.md, "restore-hub")
#
# Needs: the moto venv of scripts/test (HUBVAULT_TEST_VENV, default .venv), the aws CLI
# (pip install awscli), GNU time. Builds hubvault in release mode. Run it at low load
# (`uptime`): the machine has two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-8}
events=${2:-300000}
venv=${HUBVAULT_TEST_VENV:-$(pwd)/.venv}
work=${BENCH_DIR:-/tmp/hubvault-bench-hub}
runs=${RUNS:-2}
cargo build --release --quiet --bin hubvault --example make_fixture
hv=$(pwd)/target/release/hubvault
mkdir -p "$work/fixtures"

hub=11111111-2222-4333-8444-000000000001
new_hub=11111111-2222-4333-8444-000000000002
if [ ! -f "$work/fixtures/ids" ]; then
  types=(hrb-cellario sdc idbs-eworkbook solace)
  : > "$work/fixtures/ids.tmp"
  for i in $(seq 1 "$n"); do
    mkdir -p "$work/fixtures/$i"
    target/release/examples/make_fixture "$work/fixtures/$i/sqlite.db" "$events" "${types[$(( (i - 1) % 4 ))]}" "$hub" >> "$work/fixtures/ids.tmp"
    sqlite3 "$work/fixtures/$i/sqlite.db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
  done
  mv "$work/fixtures/ids.tmp" "$work/fixtures/ids"
fi
du -sh "$work/fixtures"

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/moto-api/" -o /dev/null 2>/dev/null && break; sleep 0.1; done
curl -fsS -X PUT "http://127.0.0.1:$port/bench-hub" > /dev/null
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
unset AWS_CA_BUNDLE
export HUBVAULT_BUCKET=s3://bench-hub HUBVAULT_ORG=bench

# The connectors' ids move into the map: old -> new (new ids fixed, so runs compare).
maps=(); conns=(); i=0
while read -r _ c; do
  i=$((i + 1)); conns+=("$c")
  maps+=(--map "$c=22222222-3333-4444-8555-$(printf '%012d' "$i")")
done < "$work/fixtures/ids"
for i in $(seq 1 "$n"); do
  $hv backup --db "$work/fixtures/$i/sqlite.db" --force > /dev/null
done

uptime
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
hub_t=(); seq_t=(); cp_t=(); cpv_t=(); hub_rss=0; seq_rss=0
for r in $(seq 1 "$runs"); do
  rm -rf "$work/root" && mkdir -p "$work/root"; sync
  /usr/bin/time -f '%e %M' -o "$work/t" $hv restore-hub --datahub "$hub" --to-datahub "$new_hub" \
    --hub-root "$work/root" "${maps[@]}" --yes --json > "$work/hub.json"
  read -r t m < "$work/t"; hub_t+=("$t"); [ "$m" -gt "$hub_rss" ] && hub_rss=$m
  at=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['restore']['instant'])" "$work/hub.json")

  rm -rf "$work/root" && mkdir -p "$work/root"; sync
  start=$(date +%s.%N)
  i=0
  for c in "${conns[@]}"; do
    i=$((i + 1))
    /usr/bin/time -f '%e %M' -o "$work/t" $hv restore --datahub "$hub" --connector "$c" \
      --to-datahub "$new_hub" --to-connector "22222222-3333-4444-8555-$(printf '%012d' "$i")" \
      --hub-root "$work/root" --at "$at" --yes --json > /dev/null
    read -r _ m < "$work/t"; [ "$m" -gt "$seq_rss" ] && seq_rss=$m
  done
  seq_t+=("$(echo "$(date +%s.%N) - $start" | bc)")

  rm -rf "$work/cp" && mkdir -p "$work/cp"; sync
  start=$(date +%s.%N)
  pids=()
  for c in "${conns[@]}"; do
    aws s3 cp --quiet "s3://bench-hub/bench/datahub/$hub/connector/$c/sqlite.db" "$work/cp/$c.db" &
    pids+=($!)
  done
  wait "${pids[@]}"
  cp_t+=("$(echo "$(date +%s.%N) - $start" | bc)")

  rm -rf "$work/cp" && mkdir -p "$work/cp"; sync
  start=$(date +%s.%N)
  python3 - "$work/hub.json" <<'PY' > "$work/keys"
import json, sys
for c in json.load(open(sys.argv[1]))["restore"]["connectors"]:
    print(c["key"])
PY
  pids=()
  while read -r k; do
    aws s3 cp --quiet "s3://bench-hub/$k" "$work/cp/$(basename "$k")" &
    pids+=($!)
  done < "$work/keys"
  wait "${pids[@]}"
  cpv_t+=("$(echo "$(date +%s.%N) - $start" | bc)")
done
uptime

canon=$(du -cm "$work"/fixtures/*/sqlite.db | tail -1 | cut -f1)
versions=$(python3 - "$work/hub.json" <<'PY'
import json, sys
print(sum(c["bytes"] for c in json.load(open(sys.argv[1]))["restore"]["connectors"]) // 2**20)
PY
)
printf '%s connectors, %s MiB of databases in all; runs: %s (median)\n\n' "$n" "$canon" "$runs"
printf '| restore of the hub | time (s) | peak RSS |\n|---|---|---|\n'
printf '| hubvault restore-hub (fetch, verify, rewrite, install; 4 at once) | %s | %s MiB |\n' \
  "$(printf '%s\n' "${hub_t[@]}" | median)" "$((hub_rss / 1024))"
printf '| %s x hubvault restore, one after another | %s | %s MiB (each) |\n' "$n" "$(printf '%s\n' "${seq_t[@]}" | median)" "$((seq_rss / 1024))"
printf '| aws s3 cp of the %s canonical objects (%s MiB), in parallel | %s | |\n' "$n" "$canon" "$(printf '%s\n' "${cp_t[@]}" | median)"
printf '| aws s3 cp of the %s zstd versions restore-hub downloads, in parallel | %s | |\n' "$n" "$(printf '%s\n' "${cpv_t[@]}" | median)"
echo "restored ${versions} MiB; work dir: $work (remove it when done)"
