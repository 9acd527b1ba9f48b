#!/usr/bin/env bash
# `hubvault remap` in place against the seed's two UPDATE statements in the sqlite3 CLI
# (bench/remap.sh writes them: WORKDIR/seed.sql), alternated run by run (seed, hubvault,
# seed, ...) on a fresh copy of the same file each time, so that a loaded machine's bursts
# fall on both evenly; then per side the median (min-max) of wall seconds, CPU seconds
# (user + system, /usr/bin/time) and peak RSS, and the ratio of the wall medians.
#
#   bench/remap_pairs.sh WORKDIR [PAIRS]                 (WORKDIR: made by bench/remap.sh)
#   JOURNAL=delete bench/remap_pairs.sh WORKDIR          (its rollback-journal copy, base-delete.db)
#   HUBVAULT_PAGE_REWRITE=0 bench/remap_pairs.sh ...     (hubvault on the SQL rewrite)
#
# Needs sqlite3 and GNU time. Uses target/release/hubvault as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$1
pairs=${2:-5}
bin=$(pwd)/target/release/hubvault
base="$work/base.db"
[ "${JOURNAL:-wal}" = delete ] && base="$work/base-delete.db"
[ -f "$base" ] && [ -f "$work/seed.sql" ] || { echo "run bench/remap.sh first (and JOURNAL=delete bench/remap.sh)"; exit 2; }
new_hub=11111111-2222-4333-8444-555555555555
new_conn=66666666-7777-4888-8999-aaaaaaaaaaaa
stats() { sort -n | awk '{a[NR]=$1} END {printf "%s (%s-%s)", a[int((NR+1)/2)], a[1], a[NR]}'; }
fresh() { rm -f "$work"/copy.db*; cp "$base" "$work/copy.db"; sync; }
: > "$work/pairs"
for _ in $(seq "$pairs"); do
  fresh
  /usr/bin/time -f 'seed %e %U %S %M' -o "$work/t" sqlite3 "$work/copy.db" < "$work/seed.sql" > /dev/null
  cat "$work/t" >> "$work/pairs"
  fresh
  /usr/bin/time -f 'hubvault %e %U %S %M' -o "$work/t" "$bin" remap --db "$work/copy.db" \
    --to-datahub "$new_hub" --to-connector "$new_conn" > /dev/null
  cat "$work/t" >> "$work/pairs"
done
rm -f "$work"/copy.db* "$work/t"
echo "remap in place, ${pairs} pairs; journal: ${JOURNAL:-wal}; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for side in seed hubvault; do
  wall=$(awk -v s=$side '$1==s {print $2}' "$work/pairs" | stats)
  cpu=$(awk -v s=$side '$1==s {print $3+$4}' "$work/pairs" | stats)
  rss=$(awk -v s=$side '$1==s {print int($5/1024)}' "$work/pairs" | stats)
  echo "$side: wall $wall s, CPU $cpu s, peak RSS $rss MiB"
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
s=$(awk '$1=="seed" {print $2}' "$work/pairs" | median)
h=$(awk '$1=="hubvault" {print $2}' "$work/pairs" | median)
awk -v s="$s" -v h="$h" 'BEGIN {printf "ratio of the wall medians: %.2fx\n", h / s}'
