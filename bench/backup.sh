#!/usr/bin/env bash
# Forced backup of a large connector database to a local-directory bucket, side by side
# in the same run with the sqlite3 route (`sqlite3 db ".backup x"`, a copy, `sync`) and
# the physical floor (`cp` of the file, `sync`), with peak memory of each. Durability is
# equal: hubvault fsyncs what it writes into a local-directory bucket; the others end
# with `sync`.
#
#   bench/backup.sh [SIZE_EVENTS...]     default: 320000 1300000 (about 256 MiB and 1 GiB)
#   RUNS=5 bench/backup.sh 320000
#   BASELINE=/path/to/old/hubvault bench/backup.sh   # also time an older binary, same runs
#
# Needs: sqlite3 (Debian), GNU time (/usr/bin/time). Builds hubvault in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hubvault --example make_fixture
hv=target/release/hubvault
work=${BENCH_DIR:-/tmp/hubvault-bench}
runs=${RUNS:-3}
mkdir -p "$work"
sizes=("$@")
cpu=""
[ ${#sizes[@]} -gt 0 ] || sizes=(320000 1300000)

# "median (min-max)" of the numbers on stdin.
stats() { sort -n | awk '{a[NR]=$1} END {printf "%s (%s-%s)", a[int((NR+1)/2)], a[1], a[NR]}'; }
timed() { # timed NAME COMMAND...: appends "seconds" to $work/NAME.t, KiB to $work/NAME.m,
  # CPU seconds (user + system, children included) to $work/NAME.c
  local name=$1; shift
  sync; sleep 0.5
  /usr/bin/time -f '%e %M %U %S' -o "$work/t" "$@" >/dev/null
  read -r t m u s < "$work/t"; echo "$t" >> "$work/$name.t"; echo "$m" >> "$work/$name.m"
  echo "$u $s" | awk '{printf "%.2f\n", $1 + $2}' >> "$work/$name.c"
}
maxmib() { sort -n | tail -1 | awk '{printf "%d", $1/1024}'; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
base=${BASELINE:-}
if [ -n "$base" ]; then
  printf '| database | hubvault backup --force (new version) | unchanged (no new version) | baseline: new version | baseline: unchanged | sqlite3 .backup + cp + sync | cp + sync | peak RSS: hubvault / baseline / sqlite3 / cp |\n|---|---|---|---|---|---|---|---|\n'
else
  printf '| database | hubvault backup --force (new version) | unchanged (no new version) | sqlite3 .backup + cp + sync | cp + sync | peak RSS: hubvault / sqlite3 / cp |\n|---|---|---|---|---|---|\n'
fi
for n in "${sizes[@]}"; do
  db="$work/$n/sqlite.db"
  if [ ! -f "$db" ]; then
    mkdir -p "$work/$n"
    target/release/examples/make_fixture "$db" "$n" >/dev/null
    sqlite3 "$db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
  fi
  size=$(du -m "$db" | cut -f1)
  rm -f "$work"/*.t "$work"/*.m "$work"/*.c
  for i in $(seq 1 "$runs"); do
    rm -rf "$work/bucket" "$work/copy" && mkdir -p "$work/bucket" "$work/copy" "$work/tmp"
    sqlite3 "$db" "INSERT OR REPLACE INTO SequelizeMeta VALUES ('bench-$i-$RANDOM')"
    timed new $hv backup --db "$db" --bucket "file://$work/bucket" --org bench --force --tmp-dir "$work/tmp"
    timed same $hv backup --db "$db" --bucket "file://$work/bucket" --org bench --force --tmp-dir "$work/tmp"
    if [ -n "$base" ]; then
      # The same two backups by the older binary, into a bucket of its own.
      rm -rf "$work/bucket" && mkdir -p "$work/bucket"
      sqlite3 "$db" "INSERT OR REPLACE INTO SequelizeMeta VALUES ('bench-$i-$RANDOM')"
      timed bnew "$base" backup --db "$db" --bucket "file://$work/bucket" --org bench --force --tmp-dir "$work/tmp"
      timed bsame "$base" backup --db "$db" --bucket "file://$work/bucket" --org bench --force --tmp-dir "$work/tmp"
    fi
    timed lite sh -c "sqlite3 '$db' '.backup $work/copy/snap.db' && cp '$work/copy/snap.db' '$work/copy/dest.db' && sync"
    rm -f "$work/copy/"*
    timed cp sh -c "cp '$db' '$work/copy/dest.db' && sync"
  done
  if [ -n "$base" ]; then
    printf '| %s MiB (%s events) | %s s | %s s | %s s | %s s | %s s | %s s | %s / %s / %s / %s MiB |\n' "$size" "$n" \
      "$(stats < "$work/new.t")" "$(stats < "$work/same.t")" "$(stats < "$work/bnew.t")" "$(stats < "$work/bsame.t")" \
      "$(stats < "$work/lite.t")" "$(stats < "$work/cp.t")" \
      "$(cat "$work/new.m" "$work/same.m" | maxmib)" "$(cat "$work/bnew.m" "$work/bsame.m" | maxmib)" \
      "$(maxmib < "$work/lite.m")" "$(maxmib < "$work/cp.m")"
  else
    printf '| %s MiB (%s events) | %s s | %s s | %s s | %s s | %s / %s / %s MiB |\n' "$size" "$n" \
      "$(stats < "$work/new.t")" "$(stats < "$work/same.t")" "$(stats < "$work/lite.t")" "$(stats < "$work/cp.t")" \
      "$(cat "$work/new.m" "$work/same.m" | maxmib)" "$(maxmib < "$work/lite.m")" "$(maxmib < "$work/cp.m")"
  fi
  # CPU time is what a loaded machine cannot hide: wall time there depends on the other jobs.
  cpu+="| $size MiB | $(stats < "$work/new.c") s | $(stats < "$work/same.c") s |"
  [ -z "$base" ] || cpu+=" $(stats < "$work/bnew.c") s | $(stats < "$work/bsame.c") s |"
  cpu+=" $(stats < "$work/lite.c") s | $(stats < "$work/cp.c") s |"$'\n'
done
echo
echo "CPU seconds (user + system):"
if [ -n "$base" ]; then
  printf '| database | hubvault new version | unchanged | baseline: new version | baseline: unchanged | sqlite3 .backup + cp + sync | cp + sync |\n|---|---|---|---|---|---|---|\n'
else
  printf '| database | hubvault new version | unchanged | sqlite3 .backup + cp + sync | cp + sync |\n|---|---|---|---|---|\n'
fi
printf '%s' "$cpu"
echo
echo "median (min-max) of $runs runs; $(nproc) cores; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
