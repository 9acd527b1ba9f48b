#!/usr/bin/env bash
# The agent's memory when a connector VACUUMs (one commit of every page, then the WAL
# removed by the sqlite3 CLI's close: a resync). The real agent captures a copy of SRC
# (a WAL-mode connector database) into a local-directory bucket; once its base is up,
#
#   sqlite3 DB "delete from Uploads where eventId % 3 = 0; delete from Events where id % 3 = 0; VACUUM;"
#
# (the lead's command deleted Events only; their Uploads then fail the restore's foreign-key
# check, so the bench deletes those too)
#
# runs as a connector would, and the agent is watched until the resync's segment is
# uploaded, then WATCH seconds more (default 75: past a minute boundary, so the
# in-agent compaction of that minute is inside the window). Reported per binary: VmRSS
# once the base is up (idle), VmHWM (peak RSS) when the VACUUM's segments are up, VmHWM
# at the end of the window, VmRSS at the end, CPU seconds (user + system, GNU time) and
# wall seconds of the agent. Then `restore` (newest) must give the database's rows.
# With BASELINE, an older binary runs the same steps, the two alternated run by run.
# COMPACT_EVERY (e.g. 1h) sets HUBVAULT_COMPACT_EVERY: with 1h the in-agent compaction
# makes no pass in the window, so the figures are capture's alone.
#
#   SRC=/path/to/sqlite.db IDS=/path/to/ids bench/vacuum_memory.sh
#   BASELINE=/path/to/old/hubvault RUNS=3 SRC=... IDS=... bench/vacuum_memory.sh
#
# MOVE=1 (one run, no BASELINE) moves SRC in instead of copying it, and so deletes it:
# for a 1 GiB database made for the run (`target/release/examples/make_fixture DB
# 1300000`), so that only one copy exists.
# IDS holds "<datahubId> <connectorId>" (make_fixture's output). ONE copy of SRC is kept
# in $BENCH_DIR (default /tmp/hubvault-bench-vacuum) and rewritten before each run;
# the whole directory is removed at the end. Needs sqlite3 and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hubvault
hv=$(pwd)/target/release/hubvault
work=${BENCH_DIR:-/tmp/hubvault-bench-vacuum}
runs=${RUNS:-3}
watch=${WATCH:-75}
base=${BASELINE:-}
src=${SRC:?SRC=path of a WAL-mode connector database}
read -r hub conn < "${IDS:?IDS=path of its ids file}"
rm -rf "$work" && mkdir -p "$work"
agent=""
trap '[ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null; sleep 1; rm -rf "$work"' EXIT
db="$work/hub/$conn/sqlite.db"
size=$(du -m "$src" | cut -f1)
if [ -n "${MOVE:-}" ] && { [ "$runs" != 1 ] || [ -n "$base" ]; }; then
  echo "MOVE=1 needs RUNS=1 and no BASELINE" >&2; exit 2
fi

wait_for() { # wait_for FILE TEXT SECONDS [COUNT]: until FILE holds TEXT COUNT times
  local i
  for i in $(seq 1 $(($3 * 10))); do
    [ "$(grep -c "$2" "$1" 2>/dev/null || true)" -ge "${4:-1}" ] && return 0
    sleep 0.1
  done
  echo "vacuum_memory.sh: no '$2' (x${4:-1}) in $1 after $3 s" >&2
  tail -20 "$1" >&2
  return 1
}
kib() { awk -v k="$1" "/$1/ {print \$2}" "/proc/$2/status"; }

one() { # one LABEL BINARY
  local label=$1 bin=$2 bucket="$work/bucket" tmp="$work/tmp"
  rm -rf "$bucket" "$tmp" "$work/hub" "$work/out.db" && mkdir -p "$bucket" "$tmp" "$work/hub/$conn"
  if [ -n "${MOVE:-}" ]; then mv "$src" "$db"; else cp "$src" "$db"; fi
  sqlite3 "$db" 'PRAGMA journal_mode=wal;' >/dev/null
  "$bin" backup --db "$db" --bucket "file://$bucket" --org bench --tmp-dir "$tmp" >/dev/null
  sync; sleep 0.5
  HUBVAULT_COMPACT_EVERY=${COMPACT_EVERY:-} RUST_LOG=warn,hubvault=debug \
    /usr/bin/time -f '%e %M %U %S' -o "$work/agent.t" \
    "$bin" agent --hub-root "$work/hub" --bucket "file://$bucket" --org bench \
    --tmp-dir "$tmp" --tick 1s -v > "$work/agent.log" 2>&1 &
  local timer=$!
  agent=""
  for _ in $(seq 1 50); do agent=$(pgrep -P "$timer" || true); [ -n "$agent" ] && break; sleep 0.1; done
  wait_for "$work/agent.log" "base uploaded" 600
  sleep 2
  kib VmRSS "$agent" >> "$work/$label.idle"
  local before
  before=$(grep -c "segment uploaded" "$work/agent.log" || true)
  # A connector's busy timeout: the first statement may meet the agent's first look.
  sqlite3 -cmd ".timeout 5000" "$db" "delete from Uploads where eventId % 3 = 0; delete from Events where id % 3 = 0; VACUUM;"
  # The resync after the WAL's removal is the last capture of the VACUUM.
  wait_for "$work/agent.log" "resyncing" 300
  wait_for "$work/agent.log" "segment uploaded" 300 $((before + 1))
  sleep 2
  kib VmHWM "$agent" >> "$work/$label.up"
  sleep "$watch"
  kib VmHWM "$agent" >> "$work/$label.hwm"
  kib VmRSS "$agent" >> "$work/$label.rss"
  grep -c "spilled" "$work/agent.log" >> "$work/$label.spills" || true
  grep -c "compaction: a large object spilled" "$work/agent.log" >> "$work/$label.cspills" || true
  kill -TERM "$agent"
  wait "$timer" || true
  agent=""
  read -r t m u s < "$work/agent.t"
  echo "$t" >> "$work/$label.wall"
  echo "$u $s" | awk '{printf "%.2f\n", $1 + $2}' >> "$work/$label.cpu"
  TMPDIR="$tmp" "$bin" restore --json --yes --bucket "file://$bucket" --org bench --datahub "$hub" \
    --connector "$conn" --output "$work/out.db" > "$work/restore.json"
  local want got
  want=$(sqlite3 "$db" 'select count(*), sum(id) from Events')
  got=$(sqlite3 "$work/out.db" 'select count(*), sum(id) from Events')
  [ "$want" = "$got" ] || { echo "restore gave $got, the database holds $want" >&2; return 1; }
  rm -rf "$bucket" "$work/out.db" "$work/hub" "$tmp"
}

stats() { sort -n | awk '{a[NR]=$1} END {printf "%s (%s-%s)", a[int((NR+1)/2)], a[1], a[NR]}'; }
mib() { sort -n | awk '{a[NR]=$1} END {printf "%d (%d-%d)", a[int((NR+1)/2)]/1024, a[1]/1024, a[NR]/1024}'; }

echo "database: $size MiB (WAL); compaction every: ${COMPACT_EVERY:-default}; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
labels=(new)
[ -n "$base" ] && labels=(new baseline)
for i in $(seq 1 "$runs"); do
  if [ -n "$base" ] && [ $((i % 2)) -eq 0 ]; then order=(baseline new); else order=("${labels[@]}"); fi
  for l in "${order[@]}"; do
    if [ "$l" = new ]; then one new "$hv"; else one baseline "$base"; fi
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| binary | idle RSS, MiB | peak RSS when the VACUUM is up, MiB | peak RSS after %s s more, MiB | RSS then, MiB | agent CPU s | agent wall s |\n|---|---|---|---|---|---|---|\n' "$watch"
for l in "${labels[@]}"; do
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$l" "$(mib < "$work/$l.idle")" \
    "$(mib < "$work/$l.up")" "$(mib < "$work/$l.hwm")" "$(mib < "$work/$l.rss")" \
    "$(stats < "$work/$l.cpu")" "$(stats < "$work/$l.wall")"
done
for l in "${labels[@]}"; do
  echo "$l: log lines \"compaction: a large object spilled\" per run: $(tr '\n' ' ' < "$work/$l.cspills")"
done
