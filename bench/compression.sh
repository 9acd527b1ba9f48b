#!/usr/bin/env bash
# Compression of kept versions on realistic connector databases (the four types):
# what hubvault stores (zstd level 1, its default) and what other zstd levels would.
#
#   bench/compression.sh [EVENTS]     default 100000 events per connector
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hubvault --example make_fixture
command -v zstd >/dev/null || { echo "needs the zstd CLI (apt-get install zstd) for the level comparison" >&2; exit 1; }
hv=target/release/hubvault
n=${1:-100000}
work=${BENCH_DIR:-/tmp/hubvault-bench-zstd}
rm -rf "$work" && mkdir -p "$work/bucket" "$work/tmp"
printf '| type | events | database | stored (level 1) | ratio | hubvault backup | zstd -3 | zstd -9 | zstd -19 |\n|---|---|---|---|---|---|---|---|---|\n'
for t in hrb-cellario sdc idbs-eworkbook solace; do
  mkdir -p "$work/$t"
  db="$work/$t/sqlite.db"
  target/release/examples/make_fixture "$db" "$n" "$t" >/dev/null
  out=$($hv backup --json --db "$db" --bucket "file://$work/bucket" --org bench --force --tmp-dir "$work/tmp")
  bytes=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
  stored=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
  secs=$(echo "$out" | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["seconds"])')
  plain=$(find "$work/bucket" -path "*$(basename "$(dirname "$db")")*" -name sqlite.db | head -1)
  plain=$(ls "$work"/bucket/bench/datahub/*/connector/*/sqlite.db | xargs ls -t | head -1)
  lv() { local s e; s=$(date +%s.%N); zstd -q -T1 "-$1" -c "$plain" > "$work/z"; e=$(date +%s.%N); printf '%.1fx %.2fs' "$(echo "$bytes / $(stat -c %s "$work/z")" | bc -l)" "$(echo "$e - $s" | bc -l)"; }
  printf '| %s | %s | %s MiB | %s MiB | %.1fx | %s s | %s | %s | %s |\n' "$t" "$n" \
    "$((bytes / 1048576))" "$(echo "scale=1; $stored / 1048576" | bc)" "$(echo "$bytes / $stored" | bc -l)" "$secs" "$(lv 3)" "$(lv 9)" "$(lv 19)"
done
echo
echo "$(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
