#!/usr/bin/env bash
# Forced backup of a large connector database to a local-directory bucket, against the
# sqlite3 route (`sqlite3 db ".backup x"` then a copy), with peak memory.
#
#   bench/backup.sh [SIZE_EVENTS...]     default: 320000 1300000 (about 256 MiB and 1 GiB)
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
[ ${#sizes[@]} -gt 0 ] || sizes=(320000 1300000)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '| database | hubvault backup --force, new version | unchanged (no new version) | sqlite3 .backup + cp | hubvault peak RSS | sqlite3 peak RSS |\n|---|---|---|---|---|---|\n'
for n in "${sizes[@]}"; do
  db="$work/$n/sqlite.db"
  if [ ! -f "$db" ]; then
    mkdir -p "$work/$n"
    target/release/examples/make_fixture "$db" "$n" >/dev/null
  fi
  size=$(du -m "$db" | cut -f1)
  new=(); same=(); lite=(); hv_rss=0; lite_rss=0
  for i in $(seq 1 "$runs"); do
    rm -rf "$work/bucket" "$work/copy" && mkdir -p "$work/bucket" "$work/copy" "$work/tmp"
    sqlite3 "$db" "INSERT OR REPLACE INTO SequelizeMeta VALUES ('bench-$i-$RANDOM')"
    sync
    /usr/bin/time -f '%e %M' -o "$work/t" $hv backup --db "$db" --bucket "file://$work/bucket" --org bench --force --tmp-dir "$work/tmp" >/dev/null
    read -r t m < "$work/t"; new+=("$t"); [ "$m" -gt "$hv_rss" ] && hv_rss=$m
    sync
    /usr/bin/time -f '%e %M' -o "$work/t" $hv backup --db "$db" --bucket "file://$work/bucket" --org bench --force --tmp-dir "$work/tmp" >/dev/null
    read -r t m < "$work/t"; same+=("$t"); [ "$m" -gt "$hv_rss" ] && hv_rss=$m
    sync
    /usr/bin/time -f '%e %M' -o "$work/t" sh -c "sqlite3 '$db' '.backup $work/copy/snap.db' && cp '$work/copy/snap.db' '$work/copy/dest.db'"
    read -r t m < "$work/t"; lite+=("$t"); [ "$m" -gt "$lite_rss" ] && lite_rss=$m
  done
  printf '| %s MiB (%s events) | %s s | %s s | %s s | %s MiB | %s MiB |\n' "$size" "$n" \
    "$(printf '%s\n' "${new[@]}" | median)" "$(printf '%s\n' "${same[@]}" | median)" "$(printf '%s\n' "${lite[@]}" | median)" \
    "$((hv_rss / 1024))" "$((lite_rss / 1024))"
done
echo
echo "median of $runs runs; $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
