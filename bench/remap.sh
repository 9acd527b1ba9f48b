#!/usr/bin/env bash
# Remap of a connector database with N events (default 1,000,000): `hubvault remap` against
# the seed's two UPDATE statements in the sqlite3 CLI, each on a fresh copy of the same file.
#
#   bench/remap.sh [EVENTS] [WORKDIR]       (results: docs/BENCHMARKS.md, section "remap")
#   BASELINE=/path/to/other/hubvault bench/remap.sh ...   (also times that binary in the same run:
#                                                         before/after on the same load)
#   JOURNAL=delete bench/remap.sh ...      (the same database in rollback-journal mode: base-delete.db)
#
# `hubvault remap` in place runs twice: on the pages (the default) and with the SQL rewrite
# (HUBVAULT_PAGE_REWRITE=0). hyperfine runs each command's runs back to back.
#
# Needs hyperfine (apt-get install hyperfine) and sqlite3. Uses the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
work=${2:-$(mktemp -d -t hubvault-bench-remap.XXXXXX)}
mkdir -p "$work"
cargo build --release --quiet --bin hubvault --example make_fixture
bin=$(pwd)/target/release/hubvault
base="$work/base.db"
if [ ! -f "$base" ]; then
  target/release/examples/make_fixture "$base" "$events" > "$work/ids"
  sqlite3 "$base" 'PRAGMA wal_checkpoint(TRUNCATE);' > /dev/null
fi
if [ "${JOURNAL:-wal}" = delete ]; then
  if [ ! -f "$work/base-delete.db" ]; then
    cp "$base" "$work/base-delete.db"
    sqlite3 "$work/base-delete.db" 'PRAGMA journal_mode=DELETE;' > /dev/null
  fi
  base="$work/base-delete.db"
fi
old_hub=$(cut -d" " -f1 "$work/ids")
new_hub=11111111-2222-4333-8444-555555555555
new_conn=66666666-7777-4888-8999-aaaaaaaaaaaa
# The seed's step 8, with the source JSON taken from the database and its ids replaced.
cat > "$work/seed.sql" <<SQL
PRAGMA foreign_keys=off;
update Integrations set id='$new_hub',
  sources=json_set(sources, '\$[0].id', '$new_conn', '\$[0].integrationId', '$new_hub')
  where id = '$old_hub';
update Events set integration='$new_hub',
  source=json_set(source, '\$.id', '$new_conn', '\$.integrationId', '$new_hub')
  where integration='$old_hub';
PRAGMA foreign_keys=on;
SQL
ls -l "$base"
sqlite3 --version
baseline=()
if [ -n "${BASELINE:-}" ]; then
  baseline=(
    -n "baseline remap (in place)" "$BASELINE remap --db $work/copy.db --to-datahub $new_hub --to-connector $new_conn"
    -n "baseline remap --output" "$BASELINE remap --db $work/copy.db --to-datahub $new_hub --to-connector $new_conn --output $work/out.db"
  )
fi
hyperfine --runs "${RUNS:-3}" --export-markdown "$work/result.md" \
  --prepare "rm -f $work/copy.db* $work/out.db*; cp $base $work/copy.db; sync" \
  -n "seed's SQL (sqlite3 CLI, in place)" "sqlite3 $work/copy.db < $work/seed.sql" \
  -n "hubvault remap (in place)" "$bin remap --db $work/copy.db --to-datahub $new_hub --to-connector $new_conn" \
  -n "hubvault remap (in place, SQL rewrite)" "HUBVAULT_PAGE_REWRITE=0 $bin remap --db $work/copy.db --to-datahub $new_hub --to-connector $new_conn" \
  -n "hubvault remap --output" "$bin remap --db $work/copy.db --to-datahub $new_hub --to-connector $new_conn --output $work/out.db" \
  "${baseline[@]}"
cat "$work/result.md"
echo "work dir: $work (remove it when done)"
