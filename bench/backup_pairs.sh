#!/usr/bin/env bash
# Forced backups by two binaries, alternated run by run (A B A B ...), so that a loaded
# machine's bursts fall on both evenly; wall time, CPU seconds (user + system, from
# /usr/bin/time) and peak RSS of each run, then medians.
#
#   BASELINE=/path/to/old/hubvault bench/backup_pairs.sh DB [PAIRS]
#   JOURNAL=delete BASELINE=... bench/backup_pairs.sh DB    # a rollback-journal copy of DB
#
# DB is a connector database (bench/backup.sh makes them: /tmp/hubvault-bench/N/sqlite.db).
# Needs: GNU time, sqlite3 (for JOURNAL). Uses target/release/hubvault as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
db=$1
pairs=${2:-3}
new=${NEW:-target/release/hubvault}
base=${BASELINE:?set BASELINE to the binary to compare with}
work=${BENCH_DIR:-/tmp/hubvault-bench}/pairs
rm -rf "$work" && mkdir -p "$work/tmp"
if [ -n "${JOURNAL:-}" ]; then
  cp "$db" "$work/sqlite.db"
  sqlite3 "$work/sqlite.db" "PRAGMA journal_mode=${JOURNAL};" >/dev/null
  db="$work/sqlite.db"
fi
stats() { sort -n | awk '{a[NR]=$1} END {printf "%s (%s-%s)", a[int((NR+1)/2)], a[1], a[NR]}'; }
one() { # one NAME BINARY: a forced backup into an emptied bucket
  rm -rf "$work/bucket" && mkdir -p "$work/bucket"
  sync; sleep 0.5
  /usr/bin/time -f '%e %M %U %S' -o "$work/t" "$2" backup --db "$db" --bucket "file://$work/bucket" \
    --org bench --force --tmp-dir "$work/tmp" >/dev/null
  read -r t m u s < "$work/t"
  echo "$t" >> "$work/$1.t"; echo "$m" | awk '{printf "%d\n", $1/1024}' >> "$work/$1.m"
  echo "$u $s" | awk '{printf "%.2f\n", $1 + $2}' >> "$work/$1.c"
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(du -m "$db" | cut -f1) MiB, journal $(sqlite3 "$db" 'PRAGMA journal_mode')"
for i in $(seq 1 "$pairs"); do
  sqlite3 "$db" "INSERT OR REPLACE INTO SequelizeMeta VALUES ('pairs-$i-$RANDOM')"
  if [ $((i % 2)) -eq 1 ]; then one new "$new"; one base "$base"; else one base "$base"; one new "$new"; fi
done
printf '| binary | wall | CPU (user + system) | peak RSS MiB |\n|---|---|---|---|\n'
for b in new base; do
  printf '| %s | %s s | %s s | %s |\n' "$b" "$(stats < "$work/$b.t")" "$(stats < "$work/$b.c")" "$(stats < "$work/$b.m")"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
