#!/usr/bin/env bash
# CPU against stored size of the zstd settings a kept version could use, on the four
# connector types (issue 13: can the version's compressor cost less CPU?). One worker
# (`-T1`), as hubvault compresses; CPU seconds are user + system of the zstd CLI.
#
#   bench/zstd_levels.sh [EVENTS]     default 100000 events per connector
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example make_fixture
command -v zstd >/dev/null || { echo "needs the zstd CLI (apt-get install zstd)" >&2; exit 1; }
n=${1:-100000}
work=${BENCH_DIR:-/tmp/hubvault-bench-zstd-levels}
mkdir -p "$work"
levels=("-1" "--fast=1" "--fast=2" "--fast=4" "-2")
printf '| type | database |'; for l in "${levels[@]}"; do printf ' %s: stored, CPU |' "$l"; done; echo
printf '|---|---|'; for _ in "${levels[@]}"; do printf -- '---|'; done; echo
for t in hrb-cellario sdc idbs-eworkbook solace; do
  db="$work/$t.db"
  [ -f "$db" ] || target/release/examples/make_fixture "$db" "$n" "$t" >/dev/null
  cat "$db" >/dev/null
  bytes=$(stat -c %s "$db")
  printf '| %s | %s MiB |' "$t" "$((bytes / 1048576))"
  for l in "${levels[@]}"; do
    /usr/bin/time -f '%U %S' -o "$work/t" zstd -q -T1 "$l" -c "$db" > "$work/z"
    read -r u s < "$work/t"
    printf ' %.1f MiB, %.2f s |' "$(echo "$(stat -c %s "$work/z") / 1048576" | bc -l)" "$(echo "$u + $s" | bc -l)"
  done
  echo
done
echo
echo "$(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg); $(zstd --version)"
