#!/usr/bin/env bash
# Issue 13 point 4: peak memory of continuous protection of a ~1 GiB connector database.
# The real agent captures the database (its base: the full image, uploaded when capture
# starts; then segments while a writer commits) into a local-directory bucket, is stopped
# with SIGTERM (after 40 commits of ROWS=5 rows, 0.3 s apart), and `restore --at` an
# instant between the commits rebuilds the state from
# the base and the segments. Peak RSS, wall and CPU seconds (user + system) of each, from
# GNU time. With BASELINE, an older binary runs the same steps in the same run, the two
# alternated run by run.
#
#   bench/stream_memory.sh [EVENTS]          default 1300000 (about 1 GiB, WAL mode)
#   BASELINE=/path/to/old/hubvault RUNS=3 bench/stream_memory.sh
#
# Before each agent run the database is backed up once (not measured) so that the agent's
# scheduler finds a fresh backup and only capture runs. Needs sqlite3 (Debian) and GNU
# time (/usr/bin/time). Builds hubvault in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin hubvault --example make_fixture
hv=$(pwd)/target/release/hubvault
work=${BENCH_DIR:-/tmp/hubvault-bench-stream}
runs=${RUNS:-3}
n=${1:-1300000}
base=${BASELINE:-}
mkdir -p "$work"

if [ ! -f "$work/ids" ]; then
  rm -rf "$work/gen" "$work/hub" && mkdir -p "$work/gen"
  target/release/examples/make_fixture "$work/gen/sqlite.db" "$n" > "$work/ids.tmp"
  read -r hub conn < "$work/ids.tmp"
  mkdir -p "$work/hub/$conn"
  mv "$work/gen/sqlite.db" "$work/hub/$conn/sqlite.db"
  sqlite3 "$work/hub/$conn/sqlite.db" 'PRAGMA journal_mode=wal;' >/dev/null
  mv "$work/ids.tmp" "$work/ids"
fi
read -r hub conn < "$work/ids"
db="$work/hub/$conn/sqlite.db"
size=$(du -m "$db" | cut -f1)

# Commits as a connector makes them, from ONE connection kept open (a sqlite3 CLI per
# commit would checkpoint and delete the WAL at every exit, and capture resync each time):
# a row added and ROWS events rewritten, 0.3 s apart.
commits() { # commits FROM TO
  python3 - "$db" "$1" "$2" "${ROWS:-5}" <<'PY'
import random, sqlite3, sys, time
db, first, last, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = sqlite3.connect(db, isolation_level=None, timeout=5)
n = c.execute("SELECT max(id) FROM Events").fetchone()[0]
for i in range(first, last + 1):
    c.execute("BEGIN")
    c.execute("INSERT OR REPLACE INTO SequelizeMeta VALUES (?)", (f"bench-{i}-{time.time()}",))
    for _ in range(rows):
        c.execute("UPDATE Events SET attempts = attempts + 1 WHERE id = ?", (random.randint(1, n),))
    c.execute("COMMIT")
    time.sleep(0.3)
PY
}

# wait_for FILE TEXT SECONDS: until FILE holds TEXT, at most SECONDS.
wait_for() {
  local i
  for i in $(seq 1 $(($3 * 10))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "stream_memory.sh: no '$2' in $1 after $3 s" >&2
  tail -20 "$1" >&2
  return 1
}

one() { # one LABEL BINARY: one agent run and one restore --at; appends to $work/LABEL.*
  local label=$1 bin=$2 bucket="$work/bucket-$1" tmp="$work/tmp"
  rm -rf "$bucket" "$tmp" "$work/out.db" && mkdir -p "$bucket" "$tmp"
  "$bin" backup --db "$db" --bucket "file://$bucket" --org bench --tmp-dir "$tmp" >/dev/null
  sync; sleep 0.5
  /usr/bin/time -f '%e %M %U %S' -o "$work/agent.t" \
    "$bin" agent --hub-root "$work/hub" --bucket "file://$bucket" --org bench \
    --tmp-dir "$tmp" --tick 1s -v > "$work/agent.log" 2>&1 &
  local timer=$! agent=""
  for _ in $(seq 1 50); do agent=$(pgrep -P "$timer" || true); [ -n "$agent" ] && break; sleep 0.1; done
  wait_for "$work/agent.log" "base uploaded" 600
  # The peak so far: capture's base (the full image) read, hashed and uploaded.
  awk '/VmHWM/ {print $2}' "/proc/$agent/status" >> "$work/$label.base.m"
  commits 1 20
  sleep 1.5
  local at
  at=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  sleep 1.5
  commits 21 40
  sleep 3
  kill -TERM "$agent"
  wait "$timer" || true
  read -r t m u s < "$work/agent.t"
  echo "$t" >> "$work/$label.agent.t"; echo "$m" >> "$work/$label.agent.m"
  echo "$u $s" | awk '{printf "%.2f\n", $1 + $2}' >> "$work/$label.agent.c"
  sync; sleep 0.5
  TMPDIR="$tmp" /usr/bin/time -f '%e %M %U %S' -o "$work/restore.t" \
    "$bin" restore --json --yes --bucket "file://$bucket" --org bench --datahub "$hub" \
    --connector "$conn" --output "$work/out.db" --at "$at" > "$work/restore.json"
  grep -q '"continuous"' "$work/restore.json" || { echo "not restored from the stream" >&2; cat "$work/restore.json" >&2; return 1; }
  read -r t m u s < "$work/restore.t"
  echo "$t" >> "$work/$label.restore.t"; echo "$m" >> "$work/$label.restore.m"
  echo "$u $s" | awk '{printf "%.2f\n", $1 + $2}' >> "$work/$label.restore.c"
  rm -rf "$bucket" "$work/out.db"
}

stats() { sort -n | awk '{a[NR]=$1} END {printf "%s (%s-%s)", a[int((NR+1)/2)], a[1], a[NR]}'; }
mib() { sort -n | awk '{a[NR]=$1} END {printf "%d (%d-%d)", a[int((NR+1)/2)]/1024, a[1]/1024, a[NR]/1024}'; }

echo "database: $size MiB ($n events, WAL); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f "$work"/*.agent.* "$work"/*.restore.* "$work"/*.base.*
labels=(new)
[ -n "$base" ] && labels=(new baseline)
for i in $(seq 1 "$runs"); do
  # Alternated: the first side changes every run.
  if [ -n "$base" ] && [ $((i % 2)) -eq 0 ]; then order=(baseline new); else order=("${labels[@]}"); fi
  for l in "${order[@]}"; do
    if [ "$l" = new ]; then one new "$hv"; else one baseline "$base"; fi
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| binary | agent peak RSS through the base, MiB | agent peak RSS, whole run, MiB | agent CPU s | restore --at peak RSS, MiB | restore wall s | restore CPU s |\n|---|---|---|---|---|---|---|\n'
for l in "${labels[@]}"; do
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$l" "$(mib < "$work/$l.base.m")" \
    "$(mib < "$work/$l.agent.m")" "$(stats < "$work/$l.agent.c")" \
    "$(mib < "$work/$l.restore.m")" "$(stats < "$work/$l.restore.t")" "$(stats < "$work/$l.restore.c")"
done
